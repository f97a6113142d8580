"""fxq-pipeline.yml: the original format, the portal's extensions, every refusal."""

from __future__ import annotations

import json
import textwrap

import pytest

from packages_app.pipeline_spec import (
    FILENAME,
    PipelineSpec,
    SpecError,
    StepSpec,
    load,
    normalise_image,
    parse,
)

HELLO_WORLD = """\
pipelines:
  steps:
    - step:
        name: Hello World With Bash
        image: alpine
        script:
          - echo Hello World
"""


def one_step(*extra: str, image: str = "alpine", script: str = "[echo hi]") -> str:
    """A one-step file (lines 1-6); `extra` lines go into the step, from line 7."""
    lines = [
        "pipelines:",
        "  steps:",
        "    - step:",
        "        name: Build",
        f"        image: {image}",
        f"        script: {script}",
        *(f"        {line}" for line in extra),
    ]
    return "\n".join(lines) + "\n"


def two_steps(*extra: str) -> str:
    """A valid step 1 (lines 3-6), then step 2 (from line 7); `extra` from line 8."""
    return one_step() + "    - step:\n" + "".join(f"        {x}\n" for x in extra)


def refusal(text: str, **kwargs: bool) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse(text, **kwargs)
    return info.value


def test_it_parses_the_original_hello_world():
    spec = parse(HELLO_WORLD)

    assert spec == PipelineSpec(
        steps=(
            StepSpec(
                name="Hello World With Bash",
                image="alpine:latest",
                script=("echo Hello World",),
            ),
        ),
        timeout=None,
    )
    step = spec.steps[0]
    assert step.environment == {}
    assert step.timeout is None
    assert step.allow_failure is False
    assert step.network == "none"


def test_it_parses_every_extension():
    text = textwrap.dedent(
        """\
        pipelines:
          timeout: 600
          steps:
            - step:
                name: Test
                image: python:3.12-slim
                script:
                  - pip install -r requirements.txt
                  - pytest -q
                environment:
                  DJANGO_DEBUG: "1"
                  _private: x
                timeout: 30
                allow_failure: true
                network: host
            - step:
                name: Deploy
                image: localhost:5000/deploy
                script: ["./deploy.sh"]
                network: none
        """
    )

    spec = parse(text, allow_host_network=True)

    assert spec.timeout == 600
    test, deploy = spec.steps
    assert test == StepSpec(
        name="Test",
        image="python:3.12-slim",
        script=("pip install -r requirements.txt", "pytest -q"),
        environment={"DJANGO_DEBUG": "1", "_private": "x"},
        timeout=30,
        allow_failure=True,
        network="host",
    )
    assert deploy.image == "localhost:5000/deploy:latest"
    assert deploy.network == "none"
    assert deploy.environment == {}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"1"', "1"),
        ("1", "1"),
        ("-7", "-7"),
        ("1.5", "1.5"),
        ("true", "true"),
        ("false", "false"),
        ("hello world", "hello world"),
        ('""', ""),
        ("'yes'", "yes"),
    ],
)
def test_it_converts_environment_scalars_to_strings(value, expected):
    spec = parse(one_step(f"environment: {{A: {value}}}"))

    assert spec.steps[0].environment == {"A": expected}


def test_it_keeps_multiline_commands_whole():
    text = one_step(
        script="\n          - |\n            echo one\n            echo two"
    )

    spec = parse(text)

    assert spec.steps[0].script == ("echo one\necho two\n",)


def test_it_accepts_anchors_and_merge_keys():
    text = textwrap.dedent(
        """\
        pipelines:
          steps:
            - step: &base
                name: One
                image: alpine
                script: [echo one]
                environment: {A: "1"}
            - step:
                <<: *base
                name: Two
        """
    )

    one, two = parse(text).steps

    assert two.name == "Two"
    assert two.image == one.image == "alpine:latest"
    assert two.environment == {"A": "1"}


def test_it_serialises_a_step_as_json():
    step = parse(one_step("environment: {A: 1}", "timeout: 5")).steps[0]

    data = step.as_dict()

    assert json.loads(json.dumps(data)) == {
        "name": "Build",
        "image": "alpine:latest",
        "script": ["echo hi"],
        "environment": {"A": "1"},
        "timeout": 5,
        "allow_failure": False,
        "network": "none",
    }


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("alpine", "alpine:latest"),
        ("localhost/busybox", "localhost/busybox:latest"),
        ("localhost:5000/img", "localhost:5000/img:latest"),
        ("docker.io/library/alpine", "docker.io/library/alpine:latest"),
        ("img:1.2", "img:1.2"),
        ("reg:5000/img:tag", "reg:5000/img:tag"),
        ("img@sha256:" + "a" * 64, "img@sha256:" + "a" * 64),
        ("reg:5000/img@sha256:" + "b" * 64, "reg:5000/img@sha256:" + "b" * 64),
    ],
)
def test_it_normalises_images(image, expected):
    assert normalise_image(image) == expected
    assert parse(one_step(image=image)).steps[0].image == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", 1), ("604800", 7 * 24 * 3600)],
)
def test_it_accepts_timeouts_at_the_limits(value, expected):
    text = one_step(f"timeout: {value}").replace(
        "pipelines:\n", f"pipelines:\n  timeout: {value}\n"
    )

    spec = parse(text)

    assert spec.timeout == expected
    assert spec.steps[0].timeout == expected


def test_it_accepts_the_most_steps():
    step = "  - step: {name: a, image: alpine, script: [x]}\n"

    spec = parse("pipelines:\n steps:\n" + step * 100)

    assert len(spec.steps) == 100


def test_it_accepts_the_longest_name_script_and_command():
    longest = "x" * 64 * 1024
    script = "".join(["\n          - 'true'"] * 999) + f"\n          - {longest}"

    spec = parse(one_step(script=script).replace("Build", "n" * 200))

    step = spec.steps[0]
    assert step.name == "n" * 200
    assert len(step.script) == 1000
    assert step.script[-1] == longest


# --- refusals -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment", "line", "key"),
    [
        ("", "fxq-pipeline.yml is empty", None, None),
        ("# nothing but a comment\n", "is empty", None, None),
        ("- step: {}\n", 'must be a mapping with the key "pipelines"', 1, None),
        ("just text\n", 'must be a mapping with the key "pipelines"', 1, None),
        (
            "pipeline:\n  steps: []\n",
            'unknown key "pipeline" at the top level (did you mean "pipelines"?)',
            1,
            "pipeline",
        ),
        (
            HELLO_WORLD + "image: alpine\n",
            'unknown key "image" at the top level',
            8,
            "image",
        ),
        ("{}\n", 'missing "pipelines" at the top level', 1, "pipelines"),
        ("pipelines: 1\n", '"pipelines" must be a mapping', 1, "pipelines"),
        ("pipelines:\n", '"pipelines" must be a mapping', 1, "pipelines"),
        ("pipelines:\n  - steps\n", '"pipelines" must be a mapping', 1, "pipelines"),
        ("pipelines:\n  timeout: 5\n", '"pipelines" has no "steps"', 2, "steps"),
        (
            "pipelines:\n  stpes: []\n",
            'unknown key "stpes" under "pipelines" (did you mean "steps"?)',
            2,
            "stpes",
        ),
        ("pipelines:\n  steps:\n", '"steps" must list at least one step', 2, "steps"),
        ("pipelines:\n  steps: []\n", "at least one step", 2, "steps"),
        ("pipelines:\n  steps: build\n", '"steps" must be a list of steps', 2, "steps"),
        ("pipelines:\n  steps: {a: 1}\n", '"steps" must be a list', 2, "steps"),
        (
            one_step().replace("  steps:", "  timeout: 0\n  steps:"),
            '"timeout" must be a whole number of seconds from 1 to 604800',
            2,
            "timeout",
        ),
    ],
)
def test_it_refuses_bad_pipeline_structure(text, fragment, line, key):
    exc = refusal(text)

    assert fragment in exc.message
    assert exc.line == line
    assert exc.step is None
    assert exc.key == key


@pytest.mark.parametrize(
    ("extra", "fragment", "line", "key"),
    [
        # step 2 starts at line 7, its first extra line is line 8
        ((), '"step" must be a mapping with "name", "image" and "script"', 7, "step"),
        (("name: Two", "image: alpine"), 'missing "script"', 8, "script"),
        (("image: alpine", "script: [x]"), 'missing "name"', 8, "name"),
        (("name: Two", "script: [x]"), 'missing "image"', 8, "image"),
        (
            ("name: Two", "image: alpine", "scirpt: [x]"),
            'unknown key "scirpt" (did you mean "script"?)',
            10,
            "scirpt",
        ),
        (
            ("name: Two", "image: alpine", "script: [x]", "env: {A: b}"),
            'unknown key "env"',
            11,
            "env",
        ),
        (
            ("name: Two", "image: alpine", "script: [x]", "allow_failures: true"),
            'unknown key "allow_failures" (did you mean "allow_failure"?)',
            11,
            "allow_failures",
        ),
        (("name: 42", "image: alpine", "script: [x]"), '"name" must be', 8, "name"),
        (("name: ''", "image: alpine", "script: [x]"), '"name" must be', 8, "name"),
        (("name: ' '", "image: alpine", "script: [x]"), "non-empty string", 8, "name"),
        (
            (f"name: {'n' * 201}", "image: alpine", "script: [x]"),
            '"name" is longer than 200 characters',
            8,
            "name",
        ),
        (("name: Two", "image: ''", "script: [x]"), '"image" must be', 9, "image"),
        (("name: Two", "image: [a]", "script: [x]"), "non-empty string", 9, "image"),
        (
            ("name: Two", "image: 'alpine latest'", "script: [x]"),
            '"image" must not contain whitespace',
            9,
            "image",
        ),
        (
            ("name: Two", 'image: "alpine\\t"', "script: [x]"),
            "must not contain whitespace",
            9,
            "image",
        ),
        (
            ("name: Two", f"image: {'i' * 500}", "script: [x]"),
            '"image" is longer than 500 characters',
            9,
            "image",
        ),
        (
            ("name: Two", "image: alpine", "script: echo hi"),
            '"script" must be a list of strings',
            10,
            "script",
        ),
        (
            ("name: Two", "image: alpine", "script: []"),
            '"script" must be a list of strings, with at least one command',
            10,
            "script",
        ),
        (
            ("name: Two", "image: alpine", "script:"),
            '"script" must be a list of strings',
            10,
            "script",
        ),
        (
            ("name: Two", "image: alpine", "script:", "  - echo a", "  - 1"),
            '"script" must be a list of strings; command 2 is not a string',
            12,
            "script",
        ),
        (
            ("name: Two", "image: alpine", "script:", "  - echo a: b"),
            'command 1 is a mapping (quote a command with ": ")',
            11,
            "script",
        ),
        (
            ("name: Two", "image: alpine", "script:", "  - [nested]"),
            "command 1 is not a string",
            11,
            "script",
        ),
        (
            ("name: Two", "image: alpine", "script:", "  - echo", "  - ''"),
            "command 2 is empty",
            12,
            "script",
        ),
        (
            ("name: Two", "image: alpine", "script:", f"  - {'x' * (64 * 1024 + 1)}"),
            "command 1 is longer than 65536 bytes",
            11,
            "script",
        ),
        (
            ("name: Two", "image: alpine", "script: [x]", "environment: [A=1]"),
            '"environment" must be a mapping of variable names to strings',
            11,
            "environment",
        ),
        (
            ("name: Two", "image: alpine", "script: [x]", "environment:"),
            '"environment" must be a mapping',
            11,
            "environment",
        ),
        (
            ("name: Two", "image: alpine", "script: [x]", "environment: {1A: x}"),
            '"environment": "1A" is not a valid variable name',
            11,
            "environment",
        ),
        (
            ("name: Two", "image: alpine", "script: [x]", "environment:", "  A-B: x"),
            '"environment": "A-B" is not a valid variable name',
            12,
            "environment",
        ),
        (
            ("name: Two", "image: alpine", "script: [x]", "environment:", "  A: [1]"),
            '"environment": "A" must be a string, number or boolean',
            12,
            "environment",
        ),
        (
            (
                "name: Two",
                "image: alpine",
                "script: [x]",
                "environment:",
                "  A: {b: 1}",
            ),
            '"environment": "A" must be a string, number or boolean',
            12,
            "environment",
        ),
        (
            ("name: Two", "image: alpine", "script: [x]", "environment:", "  A:"),
            '"environment": "A" must be a string',
            12,
            "environment",
        ),
        (
            ("name: Two", "image: alpine", "script: [x]", "timeout: 0"),
            '"timeout" must be a whole number of seconds from 1 to 604800',
            11,
            "timeout",
        ),
        (
            ("name: Two", "image: alpine", "script: [x]", "timeout: 604801"),
            '"timeout" must be a whole number',
            11,
            "timeout",
        ),
        (
            ("name: Two", "image: alpine", "script: [x]", "timeout: -5"),
            '"timeout" must be a whole number',
            11,
            "timeout",
        ),
        (
            ("name: Two", "image: alpine", "script: [x]", "timeout: true"),
            '"timeout" must be a whole number',
            11,
            "timeout",
        ),
        (
            ("name: Two", "image: alpine", "script: [x]", "timeout: 1.5"),
            '"timeout" must be a whole number',
            11,
            "timeout",
        ),
        (
            ("name: Two", "image: alpine", "script: [x]", "timeout: '30'"),
            '"timeout" must be a whole number',
            11,
            "timeout",
        ),
        (
            ("name: Two", "image: alpine", "script: [x]", "allow_failure: 1"),
            '"allow_failure" must be true or false',
            11,
            "allow_failure",
        ),
        (
            ("name: Two", "image: alpine", "script: [x]", "allow_failure: 'true'"),
            '"allow_failure" must be true or false',
            11,
            "allow_failure",
        ),
        (
            ("name: Two", "image: alpine", "script: [x]", "network: bridge"),
            '"network" must be "none" or "host"',
            11,
            "network",
        ),
        (
            ("name: Two", "image: alpine", "script: [x]", "network: off"),
            '"network" must be "none" or "host"',
            11,
            "network",
        ),
        (
            ("name: Two", "image: alpine", "script: [x]", "network: host"),
            "setting PIPELINE_ALLOW_HOST_NETWORK",
            11,
            "network",
        ),
    ],
)
def test_it_refuses_bad_steps(extra, fragment, line, key):
    exc = refusal(two_steps(*extra))

    assert exc.message.startswith("step 2: ")
    assert fragment in exc.message
    assert exc.step == 2
    assert exc.line == line
    assert exc.key == key


@pytest.mark.parametrize(
    ("item", "fragment", "line", "key"),
    [
        ("    - build", 'each item of "steps" must be a mapping', 7, None),
        ("    - {}", 'missing "step"', 7, "step"),
        ("    - stpe: {}", 'unknown key "stpe" (did you mean "step"?)', 7, "stpe"),
        (
            "    - step: {name: a, image: b, script: [c]}\n      when: always",
            'unknown key "when"',
            8,
            "when",
        ),
        # `name` etc. at the level of `step:`, not indented under it
        (
            "    - step:\n      name: Two\n      image: alpine",
            '"name" belongs under "step:" (check the indentation)',
            8,
            "name",
        ),
        ("    - image: alpine", '"image" belongs under "step:"', 7, "image"),
    ],
)
def test_it_refuses_bad_step_items(item, fragment, line, key):
    exc = refusal(one_step() + item + "\n")

    assert exc.message.startswith("step 2: ")
    assert exc.step == 2
    assert exc.line == line
    assert exc.key == key


def test_it_numbers_steps_from_one():
    text = one_step() + one_step().split("\n", 2)[2] + "    - step: {name: c}\n"

    exc = refusal(text)

    assert exc.step == 3
    assert str(exc) == 'step 3: missing "image" (line 11)'


def test_it_refuses_host_network_when_off_and_allows_it_when_on():
    text = one_step("network: host")

    exc = refusal(text)
    spec = parse(text, allow_host_network=True)

    assert "PIPELINE_ALLOW_HOST_NETWORK" in exc.message
    assert exc.line == 7
    assert spec.steps[0].network == "host"


def test_it_refuses_too_many_steps():
    step = "  - step: {name: a, image: alpine, script: [x]}\n"

    exc = refusal("pipelines:\n steps:\n" + step * 101)

    assert exc.message == "too many steps: 101 (at most 100)"
    assert exc.line == 2
    assert exc.key == "steps"


def test_it_refuses_too_many_commands():
    script = "".join(f"\n          - echo {n}" for n in range(1001))

    exc = refusal(one_step(script=script))

    assert exc.message == 'step 1: "script" has 1001 commands (at most 1000)'
    assert exc.step == 1
    assert exc.line == 6


@pytest.mark.parametrize(
    ("text", "fragment", "line"),
    [
        ("pipelines:\n  steps: [\n", "expected the node content", 3),
        ("pipelines:\n  steps:\n\t- step: {}\n", "found character '\\t'", 3),
        (HELLO_WORLD + "   bad: indent\n", "expected <block end>", 8),
        ("pipelines: {steps: [}\n", "expected the node content", 1),
        ("a: 1\n---\nb: 2\n", "expected a single document in the stream", 2),
        ("pipelines:\n  steps: x\x00\n", "character #x0000 is not allowed", 2),
        ("pipelines: *nowhere\n", "found undefined alias 'nowhere'", 1),
    ],
)
def test_it_refuses_invalid_yaml_with_its_line(text, fragment, line):
    exc = refusal(text)

    assert exc.message.startswith(f"invalid YAML at line {line}: ")
    assert fragment in exc.message
    assert exc.line == line
    # the line is already in the message, so it isn't repeated
    assert str(exc) == exc.message


def test_it_refuses_yaml_nested_too_deeply():
    exc = refusal("[" * 1000 + "]" * 1000)

    assert exc.message.startswith("invalid YAML")


@pytest.mark.parametrize(
    ("text", "message", "line", "step", "key"),
    [
        (
            HELLO_WORLD + "pipelines: {}\n",
            'duplicate key "pipelines"',
            8,
            None,
            "pipelines",
        ),
        (
            one_step().replace("  steps:", "  timeout: 5\n  timeout: 6\n  steps:"),
            'duplicate key "timeout"',
            3,
            None,
            "timeout",
        ),
        (
            two_steps("name: Two", "image: alpine", "script: [a]", "script: [b]"),
            'step 2: duplicate key "script"',
            11,
            2,
            "script",
        ),
        (
            one_step("environment:", "  A: 1", "  A: 2"),
            'step 1: duplicate key "A"',
            9,
            1,
            "A",
        ),
        (
            one_step().replace("  steps:", "  steps: []\n  steps:"),
            'duplicate key "steps"',
            3,
            None,
            "steps",
        ),
    ],
)
def test_it_refuses_duplicate_keys(text, message, line, step, key):
    exc = refusal(text)

    assert exc.message == message
    assert exc.line == line
    assert exc.step == step
    assert exc.key == key
    assert str(exc) == f"{message} (line {line})"


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (SpecError("bad"), "bad"),
        (SpecError("bad", line=3), "bad (line 3)"),
        (SpecError("bad at line 3", line=3), "bad at line 3"),
        (SpecError("bad at line 31", line=3), "bad at line 31 (line 3)"),
        (SpecError("step 2: bad", line=9, step=2, key="x"), "step 2: bad (line 9)"),
    ],
)
def test_it_formats_errors_on_one_line(exc, text):
    assert str(exc) == text
    assert "\n" not in str(exc)


def test_it_loads_the_file_at_the_root(tmp_path):
    (tmp_path / FILENAME).write_text(HELLO_WORLD, encoding="utf-8")

    spec = load(tmp_path)

    assert spec.steps[0].image == "alpine:latest"


def test_it_passes_the_host_network_setting_through_load(tmp_path):
    (tmp_path / FILENAME).write_text(one_step("network: host"), encoding="utf-8")

    spec = load(tmp_path, allow_host_network=True)

    assert spec.steps[0].network == "host"
    with pytest.raises(SpecError, match="PIPELINE_ALLOW_HOST_NETWORK"):
        load(tmp_path)


def test_it_refuses_a_missing_file(tmp_path):
    (tmp_path / "fxq-pipeline.yaml").write_text(HELLO_WORLD, encoding="utf-8")

    with pytest.raises(SpecError) as info:
        load(tmp_path)

    assert str(info.value) == "No fxq-pipeline.yml at the repository root."
    assert info.value.line is None


def test_it_refuses_a_directory_in_place_of_the_file(tmp_path):
    (tmp_path / FILENAME).mkdir()

    with pytest.raises(SpecError, match="No fxq-pipeline.yml at the repository root"):
        load(tmp_path)


def test_it_refuses_a_symlinked_file(tmp_path):
    outside = tmp_path / "outside.yml"
    outside.write_text(HELLO_WORLD, encoding="utf-8")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / FILENAME).symlink_to(outside)

    with pytest.raises(SpecError, match="not a symbolic link"):
        load(repo)


def test_it_refuses_a_file_that_is_not_utf8(tmp_path):
    (tmp_path / FILENAME).write_bytes(b"pipelines:\n  steps: \xff\xfe\n")

    with pytest.raises(SpecError, match="is not UTF-8 text"):
        load(tmp_path)
