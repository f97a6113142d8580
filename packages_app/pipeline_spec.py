"""Parse and validate `fxq-pipeline.yml`, the pipeline file at a repository's root.

The format is the original FX Quants runner's::

    pipelines:
      steps:
        - step:
            name: Hello World With Bash   # required
            image: alpine                 # required; ":latest" added when untagged
            script:                       # required; one exec per command
              - echo Hello World

The portal adds optional keys the original never read: `pipelines.timeout` (seconds
for the whole run), and per step `environment` (variable name → string; numbers and
booleans are converted), `timeout` (seconds), `allow_failure` (a failing step doesn't
fail the run) and `network` (`none`, the default, or `host` when the setting
PIPELINE_ALLOW_HOST_NETWORK is on).

Anything else, including an unknown or duplicate key, is refused with a SpecError
that names the step, the key and the line, so a typo never silently becomes a default.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

FILENAME = "fxq-pipeline.yml"
MAX_STEPS = 100
MAX_COMMANDS = 1000
MAX_COMMAND_BYTES = 64 * 1024
MAX_NAME_CHARS = 200
MAX_IMAGE_CHARS = 500  # PipelineStep.image
MAX_TIMEOUT = 7 * 24 * 3600
NETWORKS = ("none", "host")

TOP_KEYS = ("pipelines",)
PIPELINE_KEYS = ("steps", "timeout")
ITEM_KEYS = ("step",)
STEP_KEYS = (
    "name",
    "image",
    "script",
    "environment",
    "timeout",
    "allow_failure",
    "network",
)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SpecError(Exception):
    """A pipeline file the portal refuses.

    `message` is one readable line for a user; `line` (1-based line in the file),
    `step` (1-based step number) and `key` are set when known.
    """

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        step: int | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.step = step
        self.key = key

    def __str__(self) -> str:
        if self.line is None or re.search(rf"\bline {self.line}\b", self.message):
            return self.message
        return f"{self.message} (line {self.line})"


@dataclass(frozen=True)
class StepSpec:
    """One validated step; `image` is normalised."""

    name: str
    image: str
    script: tuple[str, ...]
    environment: dict[str, str] = field(default_factory=dict, hash=False)
    timeout: int | None = None
    allow_failure: bool = False
    network: str = "none"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able copy, for storing."""
        return {
            "name": self.name,
            "image": self.image,
            "script": list(self.script),
            "environment": dict(self.environment),
            "timeout": self.timeout,
            "allow_failure": self.allow_failure,
            "network": self.network,
        }


@dataclass(frozen=True)
class PipelineSpec:
    """A validated pipeline file."""

    steps: tuple[StepSpec, ...]
    timeout: int | None = None


def load(directory: Path, *, allow_host_network: bool = False) -> PipelineSpec:
    """Read and parse FILENAME at the root of a checked-out repository."""
    path = Path(directory) / FILENAME
    # A symlink could point outside the checkout, and errors quote the file's keys.
    if path.is_symlink():
        raise SpecError(f"{FILENAME} must be a regular file, not a symbolic link.")
    if not path.is_file():
        raise SpecError(f"No {FILENAME} at the repository root.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"{FILENAME} is not UTF-8 text.") from None
    return parse(text, allow_host_network=allow_host_network)


def parse(text: str, *, allow_host_network: bool = False) -> PipelineSpec:
    """Validate the text of a pipeline file; raise SpecError on the first problem."""
    data, root = _compose(text)
    if data is None:
        raise SpecError(f"{FILENAME} is empty.")
    if not isinstance(data, dict):
        raise _error(f'{FILENAME} must be a mapping with the key "pipelines"', root)
    _refuse_unknown(data, root, TOP_KEYS, where=" at the top level")
    if "pipelines" not in data:
        raise _error('missing "pipelines" at the top level', root, key="pipelines")
    pipelines, node = data["pipelines"], _child(root, "pipelines")
    if not isinstance(pipelines, dict):
        message = '"pipelines" must be a mapping with the key "steps"'
        raise _error(message, _key_node(root, "pipelines"), key="pipelines")
    _refuse_unknown(pipelines, node, PIPELINE_KEYS, where=' under "pipelines"')
    if "steps" not in pipelines:
        raise _error('"pipelines" has no "steps"', node, key="steps")
    steps, at = pipelines["steps"], _key_node(node, "steps")
    if steps is None or steps == []:
        raise _error('"steps" must list at least one step', at, key="steps")
    if not isinstance(steps, list):
        raise _error('"steps" must be a list of steps', at, key="steps")
    if len(steps) > MAX_STEPS:
        message = f"too many steps: {len(steps)} (at most {MAX_STEPS})"
        raise _error(message, at, key="steps")
    steps_node = _child(node, "steps")
    return PipelineSpec(
        steps=tuple(
            _step(number, item, _item(steps_node, number - 1), allow_host_network)
            for number, item in enumerate(steps, start=1)
        ),
        timeout=_timeout(pipelines, node, None),
    )


def normalise_image(image: str) -> str:
    """Add ":latest" to an image reference that has neither a tag nor a digest.

    A colon before the last "/" belongs to a registry port (`localhost:5000/img`).
    """
    if "@" in image or ":" in image.rsplit("/", 1)[-1]:
        return image
    return f"{image}:latest"


# --- YAML with positions ------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """A SafeLoader that notes duplicate keys, which PyYAML silently overwrites."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[Any, yaml.Mark]] = []

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in getattr(node, "value", []):
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    self.duplicates.append((key, key_node.start_mark))
                seen.add(key)
            except TypeError:  # unhashable: the base class refuses it
                continue
        return super().construct_mapping(node, deep=deep)


def _compose(text: str) -> tuple[Any, yaml.Node | None]:
    """The parsed data and its node tree, which holds the line of every value."""
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:  # a control character, found up front
        line = text.count("\n", 0, exc.position) + 1
        problem = f"character #x{exc.character:04x} is not allowed"
        message = f"invalid YAML at line {line}: {problem}"
        raise SpecError(message, line=line) from None
    try:
        root = loader.get_single_node()
        data = None if root is None else loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise SpecError(f"invalid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()
    if loader.duplicates:
        key, mark = min(loader.duplicates, key=lambda duplicate: duplicate[1].index)
        step = _step_at(root, mark.index)
        raise _error(f'duplicate key "{key}"', mark, step=step, key=str(key))
    return data, root


def _yaml_error(exc: yaml.MarkedYAMLError) -> SpecError:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "unreadable YAML"
    if exc.context and problem.startswith("but "):  # "expected a single document"
        problem = f"{exc.context} {problem}"
    if mark is None:
        return SpecError(f"invalid YAML: {problem}")
    return SpecError(
        f"invalid YAML at line {mark.line + 1}: {problem}", line=mark.line + 1
    )


def _pair(node: yaml.Node | None, key: Any) -> tuple[yaml.Node, yaml.Node] | None:
    """The (key node, value node) of `key` in a mapping node; best effort."""
    if isinstance(node, yaml.MappingNode):
        for pair in reversed(node.value):  # the last one wins, as in the dict
            if isinstance(pair[0], yaml.ScalarNode) and pair[0].value == str(key):
                return pair
    return None


def _child(node: yaml.Node | None, key: Any) -> yaml.Node | None:
    pair = _pair(node, key)
    return pair[1] if pair else None


def _key_node(node: yaml.Node | None, key: Any) -> yaml.Node | None:
    """The node of `key` itself, else the mapping's: a nearby line.

    Errors about a whole value point at its key: a block value starts a line later.
    """
    pair = _pair(node, key)
    return pair[0] if pair else node


def _item(node: yaml.Node | None, index: int) -> yaml.Node | None:
    if isinstance(node, yaml.SequenceNode) and index < len(node.value):
        return node.value[index]
    return None


def _step_at(root: yaml.Node | None, index: int) -> int | None:
    """The number of the step whose text spans character `index`, if any."""
    steps = _child(_child(root, "pipelines"), "steps")
    if isinstance(steps, yaml.SequenceNode):
        for number, item in enumerate(steps.value, start=1):
            if item.start_mark.index <= index < item.end_mark.index:
                return number
    return None


def _error(
    message: str,
    at: yaml.Node | yaml.Mark | None,
    *,
    step: int | None = None,
    key: str | None = None,
) -> SpecError:
    mark = at.start_mark if isinstance(at, yaml.Node) else at
    line = None if mark is None else mark.line + 1
    prefix = "" if step is None else f"step {step}: "
    return SpecError(prefix + message, line=line, step=step, key=key)


# --- Validation ---------------------------------------------------------------


def _refuse_unknown(
    data: dict[Any, Any],
    node: yaml.Node | None,
    allowed: tuple[str, ...],
    *,
    where: str = "",
    step: int | None = None,
) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            message = f'unknown key "{key}"{where}{hint}'
            raise _error(message, _key_node(node, key), step=step, key=str(key))


def _step(
    number: int, item: Any, node: yaml.Node | None, allow_host_network: bool
) -> StepSpec:
    if not isinstance(item, dict):
        message = 'each item of "steps" must be a mapping with the single key "step"'
        raise _error(message, node, step=number)
    for key in item:
        if key in STEP_KEYS:  # `step:` forgotten, or its keys not indented under it
            message = f'"{key}" belongs under "step:" (check the indentation)'
            raise _error(message, _key_node(node, key), step=number, key=key)
    _refuse_unknown(item, node, ITEM_KEYS, step=number)
    if "step" not in item:
        raise _error('missing "step"', node, step=number, key="step")
    spec = item["step"]
    if not isinstance(spec, dict):
        message = '"step" must be a mapping with "name", "image" and "script"'
        raise _error(message, _key_node(node, "step"), step=number, key="step")
    node = _child(node, "step") or node
    _refuse_unknown(spec, node, STEP_KEYS, step=number)
    return StepSpec(
        name=_name(spec, node, number),
        image=_image(spec, node, number),
        script=_script(spec, node, number),
        environment=_environment(spec, node, number),
        timeout=_timeout(spec, node, number),
        allow_failure=_allow_failure(spec, node, number),
        network=_network(spec, node, number, allow_host_network),
    )


def _required(
    spec: dict[Any, Any], node: yaml.Node | None, key: str, step: int
) -> tuple[Any, yaml.Node | None]:
    if key not in spec:
        raise _error(f'missing "{key}"', node, step=step, key=key)
    return spec[key], _key_node(node, key)


def _name(spec: dict[Any, Any], node: yaml.Node | None, step: int) -> str:
    name, at = _required(spec, node, "name", step)
    if not isinstance(name, str) or not name.strip():
        raise _error('"name" must be a non-empty string', at, step=step, key="name")
    if len(name) > MAX_NAME_CHARS:
        message = f'"name" is longer than {MAX_NAME_CHARS} characters'
        raise _error(message, at, step=step, key="name")
    return name


def _image(spec: dict[Any, Any], node: yaml.Node | None, step: int) -> str:
    image, at = _required(spec, node, "image", step)
    if not isinstance(image, str) or not image:
        raise _error('"image" must be a non-empty string', at, step=step, key="image")
    if re.search(r"\s", image):
        message = '"image" must not contain whitespace'
        raise _error(message, at, step=step, key="image")
    image = normalise_image(image)
    if len(image) > MAX_IMAGE_CHARS:
        message = f'"image" is longer than {MAX_IMAGE_CHARS} characters'
        raise _error(message, at, step=step, key="image")
    return image


def _script(spec: dict[Any, Any], node: yaml.Node | None, step: int) -> tuple[str, ...]:
    script, at = _required(spec, node, "script", step)
    if not isinstance(script, list) or not script:
        message = '"script" must be a list of strings, with at least one command'
        raise _error(message, at, step=step, key="script")
    if len(script) > MAX_COMMANDS:
        message = f'"script" has {len(script)} commands (at most {MAX_COMMANDS})'
        raise _error(message, at, step=step, key="script")
    items = _child(node, "script")
    for number, command in enumerate(script, start=1):
        where = _item(items, number - 1) or at
        if isinstance(command, dict):  # `- echo a: b` is a mapping in YAML
            problem = f'command {number} is a mapping (quote a command with ": ")'
        elif not isinstance(command, str):
            problem = f"command {number} is not a string (quote it)"
        elif not command.strip():
            problem = f"command {number} is empty"
        elif len(command.encode()) > MAX_COMMAND_BYTES:
            problem = f"command {number} is longer than {MAX_COMMAND_BYTES} bytes"
        else:
            continue
        message = f'"script" must be a list of strings; {problem}'
        raise _error(message, where, step=step, key="script")
    return tuple(script)


def _environment(
    spec: dict[Any, Any], node: yaml.Node | None, step: int
) -> dict[str, str]:
    if "environment" not in spec:
        return {}
    environment, at = spec["environment"], _key_node(node, "environment")
    if not isinstance(environment, dict):
        message = '"environment" must be a mapping of variable names to strings'
        raise _error(message, at, step=step, key="environment")
    values, result = _child(node, "environment"), {}
    for name, value in environment.items():
        if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
            message = (
                f'"environment": "{name}" is not a valid variable name '
                "(letters, digits and _, not starting with a digit)"
            )
            where = _key_node(values, name) or at
            raise _error(message, where, step=step, key="environment")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int | float):
            value = str(value)
        elif not isinstance(value, str):
            message = f'"environment": "{name}" must be a string, number or boolean'
            where = _key_node(values, name) or at
            raise _error(message, where, step=step, key="environment")
        result[name] = value
    return result


def _timeout(
    spec: dict[Any, Any], node: yaml.Node | None, step: int | None
) -> int | None:
    if "timeout" not in spec:
        return None
    timeout = spec["timeout"]
    whole = isinstance(timeout, int) and not isinstance(timeout, bool)
    if not whole or not 1 <= timeout <= MAX_TIMEOUT:
        message = f'"timeout" must be a whole number of seconds from 1 to {MAX_TIMEOUT}'
        raise _error(message, _key_node(node, "timeout"), step=step, key="timeout")
    return timeout


def _allow_failure(spec: dict[Any, Any], node: yaml.Node | None, step: int) -> bool:
    allow_failure = spec.get("allow_failure", False)
    if not isinstance(allow_failure, bool):
        message = '"allow_failure" must be true or false'
        at = _key_node(node, "allow_failure")
        raise _error(message, at, step=step, key="allow_failure")
    return allow_failure


def _network(
    spec: dict[Any, Any], node: yaml.Node | None, step: int, allow_host: bool
) -> str:
    network, at = spec.get("network", "none"), _key_node(node, "network")
    if not isinstance(network, str) or network not in NETWORKS:
        raise _error('"network" must be "none" or "host"', at, step=step, key="network")
    if network == "host" and not allow_host:
        message = (
            '"network: host" is turned off on this portal '
            "(setting PIPELINE_ALLOW_HOST_NETWORK)"
        )
        raise _error(message, at, step=step, key="network")
    return network
