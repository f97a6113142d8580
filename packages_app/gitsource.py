"""Cloning a pipeline's repository: URL and ref checks, then a bounded shallow clone.

Every git process runs in its own session with a deadline and a size cap on the
checkout; on excess its whole process group is killed. Credentials never leave
this module: messages and log lines carry ``redact(url)``, git's stderr is
scrubbed of the raw URL, and the real URL reaches git only through its
environment, so the workspace that pipeline steps see records the redacted URL
as ``origin`` and holds no token.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import git
from django.conf import settings

logger = logging.getLogger(__name__)

MAX_URL_LENGTH = 2000
MAX_REF_LENGTH = 250
POLL_INTERVAL = 0.2
STDERR_KEEP = 64 * 1024

# git's own rule for "<transport>::<address>" (transport.c): a remote helper runs
# an arbitrary program (ext::) or uses an inherited descriptor (fd::).
_HELPER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SCHEMES = {
    "https": "https",
    "http": "http",
    "ssh": "ssh",
    "git+ssh": "ssh",
    "ssh+git": "ssh",
    "git": "git",
    "file": "file",
}
_HEX_RE = re.compile(r"^(?:[0-9a-fA-F]{40}|[0-9a-fA-F]{64})$")
_REF_BAD_CHARS = set("~^:?*[\\")
_SAFE_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")
# Lines ssh-based fetches always add after the real reason.
_BOILERPLATE = (
    "could not read from remote repository",
    "please make sure you have the correct access rights",
    "and the repository exists",
)
_REF_MISSING = (
    "couldn't find remote ref",
    "not our ref",
    "does not allow request for unadvertised object",
    "no such remote ref",
)


class SourceError(Exception):
    """A repository the portal cannot use.

    `message` is one readable line, `field` is "url" or "ref".
    """

    def __init__(self, message: str, *, field: str = "url"):
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass
class Checkout:
    commit: str  # full sha of HEAD after checkout
    path: Path
    bytes: int  # size on disk after the clone


def _has_control(text: str) -> bool:
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in text)


def _has_space(text: str) -> bool:
    return any(ch.isspace() for ch in text)


def _split_scp(url: str) -> tuple[str, str] | None:
    """``(host, path)`` of an scp-like ``[user@]host:path``, else None (git's rule)."""
    if "://" in url:
        return None
    if url.startswith("["):
        # [host]:path or [user@host:port]:path
        end = url.find("]:")
        if end == -1:
            return None
        colon = end + 1
    else:
        colon = url.find(":")
        slash = url.find("/")
        if colon == -1 or (slash != -1 and slash < colon):
            return None
    return url[:colon], url[colon + 1 :]


def _authority(rest: str) -> tuple[str, str]:
    """Split what follows ``scheme://`` into (authority, remainder)."""
    match = re.search(r"[/?#]", rest)
    if match is None:
        return rest, ""
    return rest[: match.start()], rest[match.start() :]


def check_url(url: str, *, schemes: list[str] | None = None) -> str:
    """Classify a clone URL as https, http, ssh, git or file, refusing anything unsafe.

    Refused before any process starts: empty or oversized values, whitespace and
    control characters, a leading "-" (git would read it as an option), remote
    helpers such as ``ext::`` and ``fd::``, unknown schemes, and schemes missing
    from ``schemes`` (by default ``settings.PIPELINE_GIT_SCHEMES``).
    """
    if not isinstance(url, str) or not url.strip():
        raise SourceError("Enter the URL of a git repository.")
    if len(url) > MAX_URL_LENGTH:
        raise SourceError(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    if _has_control(url):
        raise SourceError("The URL contains control characters.")
    if url.startswith("-"):
        raise SourceError('The URL must not start with "-".')
    helper = _HELPER_RE.match(url)
    if helper:
        transport = helper.group(0)[:-2]
        raise SourceError(
            f'The "{transport}::" remote helper transport is not allowed; '
            "use an https, ssh or git URL."
        )
    if _has_space(url):
        raise SourceError("The URL contains whitespace.")

    scheme = _classify(url)
    allowed = [
        s.strip().lower()
        for s in (settings.PIPELINE_GIT_SCHEMES if schemes is None else schemes)
    ]
    if scheme not in allowed:
        raise SourceError(
            f'The "{scheme}" scheme is not allowed '
            f"(PIPELINE_GIT_SCHEMES is {', '.join(allowed) or 'empty'})."
        )
    return scheme


def _classify(url: str) -> str:
    match = _SCHEME_RE.match(url)
    if match:
        name = match.group(1).lower()
        if name not in _SCHEMES:
            raise SourceError(f'The URL scheme "{name}" is not supported.')
        scheme = _SCHEMES[name]
        if scheme == "file":
            return scheme
        authority, _ = _authority(url[match.end() :])
        host = authority.rpartition("@")[2]
        user = authority.rpartition("@")[0]
        if not host or host.startswith(":"):
            raise SourceError("The URL has no host name.")
        # ssh would read a leading "-" in the host or user as an option.
        if host.startswith("-") or user.startswith("-"):
            raise SourceError('The host name must not start with "-".')
        return scheme
    scp = _split_scp(url)
    if scp is not None:
        host_part, path = scp
        host = host_part.strip("[]").rpartition("@")[2]
        if not host:
            raise SourceError("The URL has no host name.")
        if host.startswith("-") or host_part.lstrip("[").startswith("-"):
            raise SourceError('The host name must not start with "-".')
        if not path:
            raise SourceError("The URL has no repository path.")
        return "ssh"
    return "file"


def check_ref(ref: str) -> str:
    """Return ``ref`` if git can fetch it by name; "" means the default branch.

    Follows ``git check-ref-format --allow-onelevel`` loosely and accepts full
    40- or 64-hex commit ids.
    """
    if ref == "":
        return ref
    if not isinstance(ref, str):
        raise SourceError("The ref must be text.", field="ref")
    if len(ref) > MAX_REF_LENGTH:
        raise SourceError(
            f"The ref is longer than {MAX_REF_LENGTH} characters.", field="ref"
        )
    if _HEX_RE.match(ref):
        return ref
    if _has_control(ref):
        raise SourceError("The ref contains control characters.", field="ref")
    if _has_space(ref):
        raise SourceError("The ref contains whitespace.", field="ref")
    if ref.startswith(("-", "+")):
        raise SourceError(f'The ref must not start with "{ref[0]}".', field="ref")
    if "::" in ref or ".." in ref or "@{" in ref or "//" in ref:
        raise SourceError(f'"{ref}" is not a valid git ref.', field="ref")
    bad = sorted(_REF_BAD_CHARS.intersection(ref))
    if bad:
        raise SourceError(
            f'The ref must not contain "{"".join(bad)}".',
            field="ref",
        )
    if (
        ref == "@"
        or ref.startswith("/")
        or ref.endswith(("/", ".", ".lock"))
        or any(part.startswith(".") for part in ref.split("/"))
    ):
        raise SourceError(f'"{ref}" is not a valid git ref.', field="ref")
    return ref


def redact(url: str) -> str:
    """The URL without credentials, fit for messages and logs; never raises.

    The password always goes; for anything but ssh the user name goes too, since
    over http(s) it is often a token. scp-like URLs carry no password and stay.
    """
    try:
        helper = _HELPER_RE.match(url)
        if helper:
            return helper.group(0) + redact(url[helper.end() :])
        match = _SCHEME_RE.match(url)
        if not match:
            return url
        authority, rest = _authority(url[match.end() :])
        if "@" not in authority:
            return url
        userinfo, _, hostport = authority.rpartition("@")
        user = userinfo.partition(":")[0]
        if _SCHEMES.get(match.group(1).lower()) == "ssh" and user:
            hostport = f"{user}@{hostport}"
        return f"{match.group(0)}{hostport}{rest}"
    except Exception:  # a helper for messages and logs must never fail
        return "<unprintable URL>"


def _secrets(url: str) -> list[str]:
    """Substrings of ``url`` that must never appear in a message."""
    match = _SCHEME_RE.match(url)
    if not match:
        return []
    authority, _ = _authority(url[match.end() :])
    if "@" not in authority:
        return []
    userinfo = authority.rpartition("@")[0]
    user, _, password = userinfo.partition(":")
    found = [userinfo, password, unquote(password)]
    if _SCHEMES.get(match.group(1).lower()) != "ssh":
        found += [user, unquote(user)]
    # Longest first, so a token is replaced whole before any of its parts.
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


def _scrub(text: str, url: str) -> str:
    safe = redact(url)
    text = text.replace(url, safe)
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text


def run_name(url: str) -> str:
    """``<owner>-<repo>`` from the URL's last two path components, in [A-Za-z0-9._-]."""
    path = url.strip()
    helper = _HELPER_RE.match(path)
    if helper:
        path = path[helper.end() :]
    match = _SCHEME_RE.match(path)
    if match:
        _, path = _authority(path[match.end() :])
        path = re.split(r"[?#]", path, maxsplit=1)[0]
    else:
        scp = _split_scp(path)
        if scp is not None:
            path = scp[1]
    parts = [p for p in re.split(r"[/\\]+", path) if p]
    if parts and parts[-1].endswith(".git"):
        parts[-1] = parts[-1][: -len(".git")]
        if not parts[-1]:
            parts.pop()
    name = "-".join(parts[-2:])
    name = _SAFE_NAME_RE.sub("-", name).strip("-.")
    return name[:100].rstrip("-.") or "repository"


def _git_env() -> dict[str, str]:
    return {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "SSH_ASKPASS": "/bin/false",
        "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o ConnectTimeout=10",
    }


def _git_config(scheme: str, allowed: list[str]) -> list[str]:
    """``-c`` options: only the allowed transports, never ext:: or fd::."""
    options = ["protocol.allow=never"]
    for name in sorted({_SCHEMES[s] for s in allowed if s in _SCHEMES} | {scheme}):
        options.append(f"protocol.{name}.allow=always")
    options += [
        "protocol.ext.allow=never",
        "protocol.fd.allow=never",
        "submodule.recurse=false",
        "core.hooksPath=/dev/null",
    ]
    args: list[str] = []
    for option in options:
        args += ["-c", option]
    return args


def _dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass  # a pack git renamed or removed meanwhile
    return total


def _mb(n: int) -> str:
    value = n / 1_000_000
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


class _Limits:
    """The deadline and size cap shared by every git process of one clone."""

    def __init__(self, dest: Path, timeout: float, max_bytes: int):
        self.dest = dest
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.deadline = time.monotonic() + timeout

    def check_size(self) -> int:
        size = _dir_size(self.dest)
        if size > self.max_bytes:
            raise SourceError(
                f"The repository is larger than {_mb(self.max_bytes)} MB."
            )
        return size

    def timed_out(self) -> SourceError:
        return SourceError(f"The clone took longer than {self.timeout:g} s.")


class _GitFailed(Exception):
    def __init__(self, stderr: str):
        super().__init__(stderr)
        self.stderr = stderr


def _run(
    repo: git.Repo,
    args: list[str],
    limits: _Limits,
    *,
    env: dict[str, str] | None = None,
) -> str:
    """Run ``git <args>`` in ``repo``, polling the limits; stdout on success.

    Raises SourceError when a limit is exceeded (after killing the process
    group), _GitFailed with the stderr text when git exits non-zero.
    """
    if time.monotonic() >= limits.deadline:
        raise limits.timed_out()
    handle = repo.git.execute(
        [git.Git.GIT_PYTHON_GIT_EXECUTABLE or "git", *args],
        as_process=True,
        env={**_git_env(), **(env or {})},
        # Its own session, so a kill reaches ssh, remote helpers and upload-pack.
        start_new_session=True,
    )
    proc: subprocess.Popen = handle.proc
    out = bytearray()
    err = bytearray()

    # Drain both pipes in threads: a full pipe would stall git and look like a hang.
    def drain(stream, sink: bytearray) -> None:
        try:
            for chunk in iter(lambda: stream.read1(8192), b""):
                sink.extend(chunk)
                if len(sink) > STDERR_KEEP:
                    del sink[: len(sink) - STDERR_KEEP]
        except (OSError, ValueError):
            pass  # the stream was closed under us after a kill

    readers = [
        threading.Thread(target=drain, args=(stream, sink), daemon=True)
        for stream, sink in ((proc.stdout, out), (proc.stderr, err))
        if stream is not None
    ]
    for reader in readers:
        reader.start()
    try:
        while True:
            try:
                proc.wait(timeout=POLL_INTERVAL)
                break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() >= limits.deadline:
                raise limits.timed_out()
            limits.check_size()
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        for reader in readers:
            reader.join(timeout=2)
    if proc.returncode != 0:
        raise _GitFailed(err.decode("utf-8", "replace"))
    return out.decode("utf-8", "replace")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _reason(stderr: str) -> str:
    """git's most telling stderr line, without its "fatal: " prefix."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    useful = [
        line
        for line in lines
        if not any(b in line.lower() for b in _BOILERPLATE)
        and not line.startswith(("From ", "* ", "hint:"))
    ]
    pick = useful or lines
    if not pick:
        return "git failed without a message"
    line = pick[-1]
    for prefix in ("fatal: ", "error: "):
        if line.startswith(prefix):
            line = line[len(prefix) :]
    return line


def clone(
    url: str,
    ref: str,
    dest: Path,
    *,
    timeout: float | None = None,
    max_bytes: int | None = None,
) -> Checkout:
    """Shallow-clone ``ref`` (default branch if "") of ``url`` into ``dest``, bounded.

    ``dest`` must not exist or be empty. On any failure it is removed and a
    SourceError says why in one line, with credentials redacted.
    """
    scheme = check_url(url)
    check_ref(ref)
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    limits = _Limits(
        dest,
        settings.PIPELINE_CLONE_TIMEOUT if timeout is None else timeout,
        settings.PIPELINE_CLONE_MAX_BYTES if max_bytes is None else max_bytes,
    )
    safe_url = redact(url)
    logger.info("Cloning %s at %s into %s", safe_url, ref or "HEAD", dest)
    try:
        checkout = _clone(url, ref, dest, scheme, limits)
    except SourceError as exc:
        shutil.rmtree(dest, ignore_errors=True)
        logger.warning("Clone of %s failed: %s", safe_url, exc.message)
        raise
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        logger.exception("Clone of %s failed unexpectedly", safe_url)
        raise
    logger.info(
        "Cloned %s at %s: %s, %d bytes",
        safe_url,
        ref or "HEAD",
        checkout.commit,
        checkout.bytes,
    )
    return checkout


def _clone(url: str, ref: str, dest: Path, scheme: str, limits: _Limits) -> Checkout:
    allowed = list(settings.PIPELINE_GIT_SCHEMES)
    config = _git_config(scheme, allowed)
    safe_url = redact(url)
    repo = git.Repo.init(dest, mkdir=True)

    def fail(exc: _GitFailed) -> SourceError:
        stderr = _scrub(exc.stderr, url)
        if any(marker in stderr for marker in _REF_MISSING):
            if not ref:
                return SourceError(
                    f"Could not clone {safe_url}: it has no default branch "
                    "(is the repository empty?)"
                )
            return SourceError(
                f'The ref "{ref}" was not found in the repository.', field="ref"
            )
        return SourceError(f"Could not clone {safe_url}: {_reason(stderr)}")

    # The remote "origin" lives only in the environment of the fetches: the URL,
    # and any token in it, never reaches argv (ps) nor .git/config, which
    # pipeline steps can read in their workspace.
    origin = {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "remote.origin.url",
        "GIT_CONFIG_VALUE_0": url,
    }
    fetch = [*config, "fetch", "--no-tags", "--no-recurse-submodules"]
    target = "FETCH_HEAD"
    try:
        _run(
            repo,
            [*fetch, "--depth", "1", "--", "origin", ref or "HEAD"],
            limits,
            env=origin,
        )
    except _GitFailed as exc:
        if not _HEX_RE.match(ref):
            raise fail(exc) from None
        # A server without protocol v2 (or refusing unadvertised objects) only
        # serves a commit id through a full fetch of its branches and tags.
        try:
            _run(
                repo,
                [
                    *fetch,
                    "--",
                    "origin",
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ],
                limits,
                env=origin,
            )
        except _GitFailed as exc2:
            raise fail(exc2) from None
        try:
            _run(
                repo, ["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], limits
            )
        except _GitFailed:
            raise SourceError(
                f'The ref "{ref}" was not found in the repository.', field="ref"
            ) from None
        target = ref
    try:
        _run(repo, [*config, "checkout", "--quiet", "--detach", target], limits)
        commit = _run(repo, ["rev-parse", "HEAD"], limits).strip()
        # The redacted URL only: enough for `git remote -v`, no token to steal.
        _run(repo, ["remote", "add", "--", "origin", safe_url], limits)
    except _GitFailed as exc:
        raise SourceError(
            f"Could not check out {safe_url}: {_reason(_scrub(exc.stderr, url))}"
        ) from None
    size = limits.check_size()
    return Checkout(commit=commit, path=dest, bytes=size)
