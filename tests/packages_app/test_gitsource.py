"""packages_app.gitsource: URL and ref checks, redaction, and real bounded clones."""

from __future__ import annotations

import base64
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from packages_app.gitsource import (
    Checkout,
    SourceError,
    check_ref,
    check_url,
    clone,
    redact,
    run_name,
)
from tests.fixtures.gitdaemon import git, make_repo
from tests.fixtures.processes import free_port

DEFAULT_SCHEMES = ["https", "ssh", "git"]
ALL_SCHEMES = ["https", "http", "ssh", "git", "file"]


@pytest.fixture(autouse=True)
def _schemes(settings, monkeypatch):
    settings.PIPELINE_GIT_SCHEMES = list(DEFAULT_SCHEMES)
    settings.PIPELINE_CLONE_TIMEOUT = 20
    settings.PIPELINE_CLONE_MAX_BYTES = 50 * 1024 * 1024
    # Tests talk to 127.0.0.1 only: never through a proxy from the environment.
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture
def serve(git_daemon, tmp_path):
    """Make a repository served by the daemon; returns (repo path, git:// URL)."""

    def make(files: dict[str, str], **kwargs) -> tuple[Path, str]:
        name = f"{tmp_path.name}.git"
        path = git_daemon.base / name
        make_repo(path, files, **kwargs)
        return path, git_daemon.url(name)

    return make


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self.closed = threading.Event()  # the client hung up
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted.set()
            with conn:
                conn.settimeout(0.05)
                while not self.stop.is_set():
                    try:
                        if not conn.recv(4096):
                            break
                    except TimeoutError:
                        continue
                    except OSError:
                        break
            self.closed.set()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


# check_url


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("https://github.com/a/b.git", "https"),
        ("HTTPS://github.com/a/b", "https"),
        ("git@github.com:a/b.git", "ssh"),
        ("github.com:a/b.git", "ssh"),
        ("ssh://git@github.com/a/b.git", "ssh"),
        ("ssh://git@[::1]:2222/a/b.git", "ssh"),
        ("git+ssh://host/a/b.git", "ssh"),
        ("ssh+git://host/a/b.git", "ssh"),
        ("git://127.0.0.1:9418/hello.git", "git"),
    ],
)
def test_it_accepts_and_classifies_urls(url, scheme):
    assert check_url(url) == scheme


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("", "Enter the URL"),
        ("   ", "Enter the URL"),
        ("https://h/" + "a" * 2000, "longer than 2000"),
        ("https://github.com/a/b.git\n", "control characters"),
        ("https://github.com/a\x00/b.git", "control characters"),
        (" https://github.com/a/b.git", "whitespace"),
        ("https://github.com/a b.git", "whitespace"),
        ("-uhelp", 'start with "-"'),
        ("--upload-pack=touch /tmp/x", 'start with "-"'),
        ("ext::sh -c touch% /tmp/pwned", '"ext::"'),
        ("fd::17", '"fd::"'),
        ("https::https://github.com/a/b.git", '"https::"'),
        ("foo://host/x", '"foo" is not supported'),
        ("ftp://host/x", '"ftp" is not supported'),
        ("http://github.com/a/b.git", '"http" scheme is not allowed'),
        ("file:///x", '"file" scheme is not allowed'),
        ("/tmp/x", '"file" scheme is not allowed'),
        ("./repo", '"file" scheme is not allowed'),
        ("https:///a/b.git", "no host"),
        ("ssh://-oProxyCommand=touch%20x/a/b", 'must not start with "-"'),
        ("ssh://-oProxyCommand=x@host/a/b", 'must not start with "-"'),
        ("-oProxyCommand=x:a/b", 'start with "-"'),
        ("git@-oProxyCommand=x:a/b", 'must not start with "-"'),
        ("git@host:", "no repository path"),
    ],
)
def test_it_refuses_urls(url, fragment):
    with pytest.raises(SourceError) as excinfo:
        check_url(url)

    assert fragment in excinfo.value.message
    assert excinfo.value.field == "url"
    assert str(excinfo.value) == excinfo.value.message
    assert "\n" not in excinfo.value.message


def test_it_names_the_setting_when_a_scheme_is_not_allowed():
    with pytest.raises(SourceError) as excinfo:
        check_url("http://github.com/a/b.git")

    assert '"http"' in excinfo.value.message
    assert "PIPELINE_GIT_SCHEMES is https, ssh, git" in excinfo.value.message


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("file:///x", "file"),
        ("/tmp/x", "file"),
        ("./repo", "file"),
        ("repos/hello", "file"),
        ("http://github.com/a/b.git", "http"),
    ],
)
def test_it_accepts_schemes_that_are_allowed(url, scheme):
    assert check_url(url, schemes=ALL_SCHEMES) == scheme


def test_it_reads_allowed_schemes_from_settings(settings):
    settings.PIPELINE_GIT_SCHEMES = ["file"]

    assert check_url("/tmp/x") == "file"
    with pytest.raises(SourceError, match="PIPELINE_GIT_SCHEMES is file"):
        check_url("https://github.com/a/b.git")


@pytest.mark.parametrize(
    "url", ["ext::sh -c touch% /tmp/pwned", "fd::17", "-uhelp", "--upload-pack=x"]
)
def test_it_refuses_injection_even_with_every_scheme_allowed(url):
    with pytest.raises(SourceError) as excinfo:
        check_url(url, schemes=ALL_SCHEMES)

    assert excinfo.value.field == "url"
    assert "scheme" not in excinfo.value.message


# check_ref


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "main",
        "feature/login-form",
        "v1.2.3",
        "refs/heads/main",
        "refs/pull/12/head",
        "a" * 40,
        "0123456789abcdef" * 4,
    ],
)
def test_it_accepts_refs(ref):
    assert check_ref(ref) == ref


@pytest.mark.parametrize(
    "ref",
    [
        "-x",
        "--upload-pack=touch /tmp/x",
        "+main",
        "a b",
        "main ",
        "a..b",
        "a::b",
        "a:b",
        "a\x00b",
        "a\tb",
        "x" * 251,
        "HEAD~1",
        "HEAD^",
        "a*",
        "a?",
        "a[b",
        "a\\b",
        "@{upstream}",
        "@",
        "a/",
        "/a",
        "a//b",
        "a.",
        "a.lock",
        ".hidden",
        "a/.b",
    ],
)
def test_it_refuses_refs(ref):
    with pytest.raises(SourceError) as excinfo:
        check_ref(ref)

    assert excinfo.value.field == "ref"
    assert excinfo.value.message


# redact


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:tok3n@host/x", "https://host/x"),
        ("https://ghp_abc123@github.com/o/r.git", "https://github.com/o/r.git"),
        ("http://u:p@h:8080/x?y=1", "http://h:8080/x?y=1"),
        ("https://u:p%40ss@h/x", "https://h/x"),
        ("https://u:p@ss@h/x", "https://h/x"),
        ("git://u:p@h/x", "git://h/x"),
        ("ssh://git:pw@host/x", "ssh://git@host/x"),
        ("ssh://git@host/x", "ssh://git@host/x"),
        ("git+ssh://me:pw@host/x", "git+ssh://me@host/x"),
        ("git@github.com:a/b.git", "git@github.com:a/b.git"),
        ("https://github.com/a/b.git", "https://github.com/a/b.git"),
        ("/tmp/x/repos/hello", "/tmp/x/repos/hello"),
        ("https::https://u:p@h/x", "https::https://h/x"),
        ("", ""),
        ("https://[::1", "https://[::1"),
    ],
)
def test_it_redacts_credentials(url, expected):
    assert redact(url) == expected


# run_name


@pytest.mark.parametrize(
    ("url", "name"),
    [
        (
            "https://github.com/fxquants/aep-hello-world.git",
            "fxquants-aep-hello-world",
        ),
        ("https://github.com/fxquants/aep-hello-world", "fxquants-aep-hello-world"),
        ("https://github.com/fxquants/aep-hello-world/", "fxquants-aep-hello-world"),
        ("https://tok@github.com/o/r.git?x=1#y", "o-r"),
        ("git://127.0.0.1:9418/hello.git", "hello"),
        ("/tmp/x/repos/hello", "repos-hello"),
        ("/tmp/x/repos/hello/.git", "repos-hello"),
        ("git@github.com:o/r.git", "o-r"),
        ("git@github.com:r.git", "r"),
        ("https://h/weird name/r$p!.git", "weird-name-r-p"),
        ("https://h/", "repository"),
    ],
)
def test_it_derives_run_names(url, name):
    assert run_name(url) == name


def test_it_caps_run_names():
    name = run_name("https://h/" + "o" * 80 + "/" + "r" * 80 + ".git")

    assert len(name) == 100
    assert name.startswith("o" * 80 + "-r")


# clone over the git daemon


def test_it_clones_the_default_branch(serve, tmp_path):
    served, url = serve(
        {"fxq-pipeline.yml": "pipelines: {}\n"},
        commits=[{"fxq-pipeline.yml": "pipelines: {steps: []}\n"}],
    )
    dest = tmp_path / "work"

    checkout = clone(url, "", dest)

    assert isinstance(checkout, Checkout)
    assert checkout.path == dest
    assert checkout.commit == git(served, "rev-parse", "HEAD")
    assert (dest / "fxq-pipeline.yml").read_text() == "pipelines: {steps: []}\n"
    assert checkout.bytes > 0
    # shallow: the history stops at the fetched commit
    assert git(dest, "rev-list", "--count", "HEAD") == "1"
    assert git(dest, "remote", "get-url", "origin") == url


def test_it_clones_a_branch(serve, tmp_path):
    served, url = serve({"which": "main\n"})
    git(served, "checkout", "--quiet", "-b", "feature")
    (served / "which").write_text("feature\n")
    git(served, "commit", "--quiet", "-am", "feature")
    feature = git(served, "rev-parse", "HEAD")
    git(served, "checkout", "--quiet", "main")

    checkout = clone(url, "feature", tmp_path / "work")

    assert checkout.commit == feature
    assert (tmp_path / "work" / "which").read_text() == "feature\n"


def test_it_clones_a_tag(serve, tmp_path):
    served, url = serve({"version": "1\n"}, tags=["v1"])
    tagged = git(served, "rev-parse", "HEAD")
    (served / "version").write_text("2\n")
    git(served, "commit", "--quiet", "-am", "two")

    checkout = clone(url, "v1", tmp_path / "work")

    assert checkout.commit == tagged
    assert (tmp_path / "work" / "version").read_text() == "1\n"


def test_it_clones_a_commit_id(serve, tmp_path):
    served, url = serve({"version": "1\n"}, commits=[{"version": "2\n"}])
    first = git(served, "rev-parse", "HEAD~1")

    checkout = clone(url, first, tmp_path / "work")

    assert checkout.commit == first
    assert (tmp_path / "work" / "version").read_text() == "1\n"


@pytest.mark.parametrize("ref", ["nope", "0" * 40])
def test_it_reports_an_unknown_ref(serve, tmp_path, ref):
    _, url = serve({"a": "a\n"})
    dest = tmp_path / "work"

    with pytest.raises(SourceError) as excinfo:
        clone(url, ref, dest)

    assert excinfo.value.field == "ref"
    assert excinfo.value.message == (
        f'The ref "{ref}" was not found in the repository.'
    )
    assert not dest.exists()


def test_it_reports_a_missing_repository(git_daemon, tmp_path):
    url = git_daemon.url("missing.git")
    dest = tmp_path / "work"

    with pytest.raises(SourceError) as excinfo:
        clone(url, "", dest)

    assert excinfo.value.field == "url"
    assert excinfo.value.message.startswith(f"Could not clone {url}: ")
    assert "no such repository" in excinfo.value.message
    assert "\n" not in excinfo.value.message
    assert not dest.exists()


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        ("https://user:s3cret@127.0.0.1:{port}/x.git", ["s3cret", "user:"]),
        ("https://ghp_t0ken4567@127.0.0.1:{port}/x.git", ["ghp_t0ken4567"]),
    ],
)
def test_it_keeps_credentials_out_of_errors_and_logs(
    settings, tmp_path, caplog, url, secrets
):
    settings.PIPELINE_GIT_SCHEMES = ["https"]
    url = url.format(port=free_port())  # nothing listens there
    dest = tmp_path / "work"

    with caplog.at_level(logging.DEBUG), pytest.raises(SourceError) as excinfo:
        clone(url, "", dest)

    assert excinfo.value.field == "url"
    assert redact(url) in excinfo.value.message
    assert excinfo.value.message.startswith("Could not clone https://127.0.0.1:")
    for secret in secrets:
        assert secret not in excinfo.value.message
        assert secret not in caplog.text
    assert not dest.exists()


def test_it_enforces_the_timeout(silent_server, tmp_path):
    dest = tmp_path / "work"
    started = time.monotonic()

    with pytest.raises(SourceError) as excinfo:
        clone(f"git://127.0.0.1:{silent_server.port}/x.git", "", dest, timeout=1)

    assert time.monotonic() - started < 5
    assert excinfo.value.message == "The clone took longer than 1 s."
    assert silent_server.accepted.is_set()
    # the killed git hung up its connection
    assert silent_server.closed.wait(timeout=5)
    assert not dest.exists()


def test_it_enforces_a_tiny_timeout(serve, tmp_path):
    _, url = serve({"a": "a\n"})

    with pytest.raises(SourceError, match="longer than 0.001 s"):
        clone(url, "", tmp_path / "work", timeout=0.001)

    assert not (tmp_path / "work").exists()


def test_it_enforces_the_size_limit(serve, tmp_path):
    blob = base64.b64encode(os.urandom(1_500_000)).decode()  # 2 MB, incompressible
    _, url = serve({"big.txt": blob})
    dest = tmp_path / "work"

    with pytest.raises(SourceError) as excinfo:
        clone(url, "", dest, max_bytes=100_000)

    assert excinfo.value.message == "The repository is larger than 0.1 MB."
    assert not dest.exists()


def test_it_uses_the_size_limit_from_settings(settings, serve, tmp_path):
    settings.PIPELINE_CLONE_MAX_BYTES = 50_000
    _, url = serve({"big.txt": base64.b64encode(os.urandom(200_000)).decode()})

    with pytest.raises(SourceError, match="larger than 0.05 MB"):
        clone(url, "", tmp_path / "work")

    assert not (tmp_path / "work").exists()


# clone from local paths


def test_it_clones_a_local_path_when_file_is_allowed(settings, tmp_path):
    settings.PIPELINE_GIT_SCHEMES = ["file"]
    head = make_repo(tmp_path / "repos" / "hello", {"fxq-pipeline.yml": "x: 1\n"})

    checkout = clone(str(tmp_path / "repos" / "hello"), "main", tmp_path / "work")

    assert checkout.commit == head
    assert (tmp_path / "work" / "fxq-pipeline.yml").read_text() == "x: 1\n"


def test_it_refuses_a_local_path_by_default(tmp_path):
    make_repo(tmp_path / "hello", {"a": "a\n"})

    with pytest.raises(SourceError, match='"file" scheme is not allowed'):
        clone(str(tmp_path / "hello"), "", tmp_path / "work")

    assert not (tmp_path / "work").exists()


def test_it_reports_a_path_that_is_not_a_repository(settings, tmp_path):
    settings.PIPELINE_GIT_SCHEMES = ["file"]
    (tmp_path / "empty").mkdir()

    with pytest.raises(SourceError) as excinfo:
        clone(str(tmp_path / "empty"), "", tmp_path / "work")

    assert excinfo.value.field == "url"
    assert "does not appear to be a git repository" in excinfo.value.message
    assert not (tmp_path / "work").exists()


def test_it_reports_an_empty_repository(settings, tmp_path):
    settings.PIPELINE_GIT_SCHEMES = ["file"]
    git(tmp_path, "init", "--quiet", "empty")

    with pytest.raises(SourceError, match="no default branch"):
        clone(str(tmp_path / "empty"), "", tmp_path / "work")

    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize(
    "template", ["ext::sh -c touch% {pwned}", "--upload-pack=touch {pwned}"]
)
def test_it_refuses_injection_before_starting_git(settings, tmp_path, template):
    settings.PIPELINE_GIT_SCHEMES = ALL_SCHEMES
    pwned = tmp_path / "pwned"
    dest = tmp_path / "work"

    with pytest.raises(SourceError):
        clone(template.format(pwned=pwned), "", dest)

    assert not pwned.exists()
    assert not dest.exists()


def test_it_refuses_a_bad_ref_before_starting_git(settings, tmp_path):
    settings.PIPELINE_GIT_SCHEMES = ["file"]
    make_repo(tmp_path / "hello", {"a": "a\n"})

    with pytest.raises(SourceError) as excinfo:
        clone(str(tmp_path / "hello"), "--upload-pack=x", tmp_path / "work")

    assert excinfo.value.field == "ref"
    assert not (tmp_path / "work").exists()


def test_it_leaves_a_non_empty_destination_alone(settings, tmp_path):
    settings.PIPELINE_GIT_SCHEMES = ["file"]
    make_repo(tmp_path / "hello", {"a": "a\n"})
    dest = tmp_path / "work"
    dest.mkdir()
    (dest / "keep").write_text("mine")

    with pytest.raises(FileExistsError):
        clone(str(tmp_path / "hello"), "", dest)

    assert (dest / "keep").read_text() == "mine"
