"""A Graphite client: plaintext over TCP or UDP, pickle, and a ``dummy`` protocol
that writes the lines to the log (so dev and tests need no server).

What it guarantees, checked against carbon 1.1.10:

- every plaintext line is ``path value timestamp\\n``, newline-terminated (carbon
  discards an unterminated last line), UTF-8, under 16,384 bytes (a longer line
  makes carbon close the connection silently, losing the rest of the stream);
- values keep their precision: ints are written as ints, floats with ``repr()``;
  NaN and infinities are rejected;
- pickle frames are ``!L`` length + ``pickle.dumps([(path, (timestamp, value)),
  ...], protocol=2)`` with ``str`` paths, each frame under 1 MiB (carbon closes
  the connection on bigger ones); UDP datagrams hold whole lines, <= 1400 bytes.

Delivery is at-least-once as far as the socket can tell: a batch leaves the
buffer only once ``sendall`` returned, and after an error it is sent again whole
(whisper keeps the last write per slot, so a duplicate is harmless). UDP is
fire-and-forget: "sent" only means the datagram left.

Paths must be in the safe alphabet (build them with ``metric_name``): tagged
series (``;tag=value``) are not supported.
"""

from __future__ import annotations

import collections
import logging
import math
import pickle
import random
import re
import socket
import string
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from types import TracebackType

logger = logging.getLogger(__name__)

PROTOCOLS = ("plaintext", "pickle", "udp", "dummy")
DEFAULT_PORTS = {"plaintext": 2003, "pickle": 2004, "udp": 2003, "dummy": 0}
# carbon's LineReceiver.MAX_LENGTH: a longer line closes the connection.
MAX_LINE_BYTES = 16_384
# carbon's PICKLE_RECEIVER_MAX_LENGTH: a bigger frame closes the connection.
MAX_FRAME_BYTES = 1 << 20
# Fits one Ethernet frame with IP and UDP headers: no fragmentation.
MAX_DATAGRAM_BYTES = 1400

_SAFE_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-")
_SAFE_PATH = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
# Paths already checked by this process; cleared when it grows past the limit.
_KNOWN_PATHS_LIMIT = 100_000
_BIG = 10**20

Point = tuple[str, float | int, int]


# --- Names ----------------------------------------------------------------------


def sanitize_level(level: str | int) -> str:
    """One level of a metric path, in the safe alphabet ``[A-Za-z0-9_-]``.

    Letters, digits and ``-`` stay; every other character, ``_`` included, is
    written as its UTF-8 bytes, each as ``_`` and two lowercase hex digits
    (``"my app" -> "my_20app"``, ``"a.b" -> "a_2eb"``, ``"a_b" -> "a_5fb"``). As
    ``_`` only ever starts an escape, the rule can be undone, so two distinct
    levels never map to the same name. An empty level is refused (ValueError).
    """
    text = str(level)
    if not text:
        raise ValueError("a metric path cannot have an empty level")
    if all(character in _SAFE_CHARACTERS for character in text):
        return text
    return "".join(
        character
        if character in _SAFE_CHARACTERS
        else "".join(
            f"_{byte:02x}" for byte in character.encode("utf-8", "surrogatepass")
        )
        for character in text
    )


def metric_name(*levels: str | int) -> str:
    """A metric path from its levels, each sanitised (see ``sanitize_level``).

    Dots inside a level are escaped, so ``metric_name("a.b")`` is one level; use
    ``sanitize_path`` for a prefix that is already a dotted path.
    """
    if not levels:
        raise ValueError("a metric path needs at least one level")
    return ".".join(sanitize_level(level) for level in levels)


def sanitize_path(path: str) -> str:
    """A dotted path (``.`` separates levels) with each level sanitised.

    ``"apps.My App.crashes"`` becomes ``"apps.My_20App.crashes"``. Empty levels
    (``"a..b"``, a leading or trailing dot) are refused with ValueError.
    """
    return metric_name(*path.split("."))


def validate_point(path: str, value: float | int, timestamp: int | float) -> bytes:
    """The plaintext line of a point, or ValueError saying why it cannot be sent.

    ``path`` must already be safe (levels of ``[A-Za-z0-9_-]`` joined by dots:
    build it with ``metric_name``); ``value`` a finite int or float (not a bool);
    ``timestamp`` non-negative Unix seconds (a float is truncated). The line,
    newline included, must fit in ``MAX_LINE_BYTES``.
    """
    _, _, _, line = _checked(path, value, timestamp)
    if len(line) > MAX_LINE_BYTES:
        raise ValueError(
            f"line of {len(line)} bytes is over carbon's {MAX_LINE_BYTES}: "
            f"{path[:60]}..."
        )
    return line


def _checked(
    path: object, value: object, timestamp: object
) -> tuple[str, float | int, int, bytes]:
    if not isinstance(path, str) or not _SAFE_PATH.fullmatch(path):
        raise ValueError(
            f"unsafe metric path {path!r}: build it with metric_name()"
            if isinstance(path, str)
            else f"metric path must be a str, not {type(path).__name__}"
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{path}: value {value!r} is not a number")
    if isinstance(value, int):
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{path}: value {value!r} is not finite")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        raise ValueError(f"{path}: timestamp {timestamp!r} is not a number")
    if isinstance(timestamp, float) and not math.isfinite(timestamp):
        raise ValueError(f"{path}: timestamp {timestamp!r} is not finite")
    timestamp = int(timestamp)
    if timestamp < 0:
        raise ValueError(f"{path}: timestamp {timestamp} is negative")
    # repr() of a float round-trips exactly; ``:g`` would turn 1234567 into 1.23457e+06.
    return path, value, timestamp, f"{path} {value!r} {timestamp}\n".encode("ascii")


# --- Results --------------------------------------------------------------------


@dataclass(frozen=True)
class FlushResult:
    """What one ``flush()`` (or ``send()``) did.

    ``sent`` points left for the server in this call, ``pending`` stay in the
    buffer for the next one, ``dropped`` (buffer overflow) and ``rejected``
    (invalid points) happened since the previous flush. ``error`` is the last
    network error when points are still pending because of it, else empty.
    """

    sent: int
    pending: int
    dropped: int = 0
    rejected: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True)
class ConnectionCheck:
    """The outcome of ``test_connection()``: a flag and one line for a human."""

    ok: bool
    message: str

    def __str__(self) -> str:
        return self.message


# --- The client -----------------------------------------------------------------


class GraphiteClient:
    """Sends points ``(path, value, timestamp)`` to one Graphite server.

    Points are buffered (at most ``buffer_limit``; beyond it the oldest are
    dropped and counted) and sent by ``flush()`` in batches of ``batch_size``,
    over one connection kept for the client's lifetime and re-opened after
    errors. Invalid points are rejected when added: counted, logged, never
    raised (only something that is not a ``(path, value, timestamp)`` triple
    raises). ``flush()`` and ``send()`` never raise for network errors either:
    each makes at most ``attempts`` tries (``timeout`` each, with exponential
    backoff and jitter between them), keeps what it could not send in the
    buffer, in order, and says so in its ``FlushResult``.

    Counters (totals over the client's life): ``sent``, ``dropped``,
    ``rejected``, ``errors`` (failed tries) and ``connects``. Not thread-safe:
    one client per loop. As a context manager it flushes, then closes, on exit.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        protocol: str = "plaintext",
        batch_size: int = 1000,
        timeout: float = 5.0,
        buffer_limit: int = 10_000,
        attempts: int = 3,
        backoff: float = 0.5,
        backoff_max: float = 10.0,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(
                f"unknown Graphite protocol {protocol!r}; one of {PROTOCOLS}"
            )
        if port is None:
            port = DEFAULT_PORTS[protocol]
        if protocol != "dummy" and not 0 < port < 65536:
            raise ValueError(f"port {port} is out of range")
        if batch_size < 1 or buffer_limit < 1 or attempts < 1:
            raise ValueError("batch_size, buffer_limit and attempts must be >= 1")
        if timeout <= 0 or backoff < 0 or backoff_max < 0:
            raise ValueError("timeout must be > 0, backoff and backoff_max >= 0")
        self.host = host
        self.port = port
        self.protocol = protocol
        self.batch_size = batch_size
        self.timeout = timeout
        self.buffer_limit = buffer_limit
        self.attempts = attempts
        self.backoff = backoff
        self.backoff_max = backoff_max
        # Lines (bytes) for plaintext, udp and dummy; (path, (timestamp, value))
        # tuples for pickle: encoded once, when added.
        self._buffer: collections.deque = collections.deque(maxlen=buffer_limit)
        self._line_limit = MAX_DATAGRAM_BYTES if protocol == "udp" else MAX_LINE_BYTES
        self._known_paths: set[str] = set()
        self._sock: socket.socket | None = None
        self.sent = 0
        self.dropped = 0
        self.rejected = 0
        self.errors = 0
        self.connects = 0
        self.last_error = ""
        self._dropped_since_flush = 0
        self._rejected_since_flush = 0

    def __repr__(self) -> str:
        return (
            f"<GraphiteClient {self.protocol} {self.host}:{self.port} "
            f"pending={self.pending}>"
        )

    def __enter__(self) -> GraphiteClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.flush()
        finally:
            self.close()

    @property
    def pending(self) -> int:
        """Points in the buffer, waiting for a flush."""
        return len(self._buffer)

    def pending_points(self) -> list[Point]:
        """The buffered points, oldest first, as ``(path, value, timestamp)``:
        what a caller saves to send later (values keep their type: an int stays
        an int, a float comes back exactly, via its ``repr``)."""
        if self.protocol == "pickle":
            return [
                (path, value, timestamp) for path, (timestamp, value) in self._buffer
            ]
        points: list[Point] = []
        for line in self._buffer:
            path, value, timestamp = line.decode("ascii").split()
            number: float | int = (
                int(value) if value.lstrip("-").isdigit() else float(value)
            )
            points.append((path, number, int(timestamp)))
        return points

    # --- Adding points ----------------------------------------------------------

    def add(self, path: str, value: float | int, timestamp: int) -> bool:
        """Buffer one point; False when it was rejected as invalid."""
        return self.extend([(path, value, timestamp)]) == 1

    def extend(self, points: Iterable[Point]) -> int:
        """Buffer points, oldest first; returns how many were accepted.

        Invalid ones (see ``validate_point``) are rejected and counted. When the
        buffer is full, the oldest buffered points make room and are counted as
        dropped.
        """
        items = []
        known = self._known_paths
        pickled = self.protocol == "pickle"
        # A known path this short, with a float or an int under 10**20 and a
        # timestamp under 10**20, fits in a line (a float's repr is <= 24
        # characters): pickle need not format the line to check its length.
        short = self._line_limit - 48
        first_reason = ""
        rejected = 0
        for path, value, timestamp in points:
            # The common case, inlined: a known path, an int or float value, an
            # int timestamp. Anything else goes through the full checks.
            kind = type(value)
            if (
                type(path) is str
                and path in known
                and (kind is int or (kind is float and math.isfinite(value)))
                and type(timestamp) is int
                and 0 <= timestamp < _BIG
            ):
                if (
                    pickled
                    and len(path) <= short
                    and (kind is float or -_BIG < value < _BIG)
                ):
                    items.append((path, (timestamp, value)))
                    continue
                line = f"{path} {value!r} {timestamp}\n".encode("ascii")
            else:
                try:
                    path, value, timestamp, line = _checked(path, value, timestamp)
                except ValueError as exc:
                    rejected += 1
                    first_reason = first_reason or str(exc)
                    continue
            if len(line) > self._line_limit:
                rejected += 1
                first_reason = first_reason or (
                    f"{path[:60]}...: line of {len(line)} bytes is over the "
                    f"{self._line_limit}-byte limit of {self.protocol}"
                )
                continue
            if path not in known:
                if len(known) >= _KNOWN_PATHS_LIMIT:
                    known.clear()
                known.add(path)
            items.append((path, (timestamp, value)) if pickled else line)
        if rejected:
            self.rejected += rejected
            self._rejected_since_flush += rejected
            logger.warning(
                "Graphite: rejected %d invalid point(s), e.g. %s",
                rejected,
                first_reason,
            )
        before = len(self._buffer)
        self._buffer.extend(items)
        dropped = before + len(items) - len(self._buffer)
        if dropped:
            self.dropped += dropped
            self._dropped_since_flush += dropped
            logger.warning(
                "Graphite: buffer full (%d points), dropped the %d oldest",
                self.buffer_limit,
                dropped,
            )
        return len(items)

    def send(self, points: Iterable[Point]) -> FlushResult:
        """Buffer points and send them, a batch at a time as they come.

        Unlike ``extend()`` then ``flush()``, a call with more points than
        ``buffer_limit`` loses none while the server takes them. Once a try of
        this call has failed ``attempts`` times, the rest of the points are only
        buffered (the oldest dropped past the limit) and the result says why.
        """
        sent = 0
        error = ""
        iterator = iter(points)
        while chunk := list(islice(iterator, self.batch_size)):
            self.extend(chunk)
            if not error and len(self._buffer) >= self.batch_size:
                count, error = self._send_buffer(whole=False)
                sent += count
        if not error:
            count, error = self._send_buffer(whole=True)
            sent += count
        return self._result(sent, error)

    # --- Sending ----------------------------------------------------------------

    def flush(self) -> FlushResult:
        """Send the buffer in batches; never raises for network errors.

        A batch leaves the buffer once written. On a socket error the connection
        is closed and the batch retried on a new one, after a backoff, until
        ``attempts`` tries of this flush have failed; then the unsent points stay
        buffered, in order, and the result carries the error.
        """
        return self._result(*self._send_buffer(whole=True))

    def close(self) -> None:
        """Close the connection; buffered points stay for a later flush.

        On TCP it half-closes first and waits (at most ``timeout``) for the
        server to close its side, which it does once it has read everything:
        when ``close()`` returns, the server has the data, not just the kernel.
        """
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            if sock.type == socket.SOCK_STREAM:
                sock.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + self.timeout
                while time.monotonic() < deadline and sock.recv(65536):
                    pass
        except OSError:
            pass
        finally:
            sock.close()

    def test_connection(self) -> ConnectionCheck:
        """Try the server once, on a connection of its own; never raises for
        network errors. UDP cannot be confirmed: only the address is resolved."""
        where = f"{self.host}:{self.port}"
        if self.protocol == "dummy":
            return ConnectionCheck(True, "Dummy protocol: lines go to the log.")
        started = time.monotonic()
        try:
            if self.protocol == "udp":
                infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
                address = infos[0][4][0]
                return ConnectionCheck(
                    True,
                    f"{where} resolves to {address} "
                    "(UDP: delivery cannot be confirmed).",
                )
            with socket.create_connection((self.host, self.port), self.timeout):
                pass
        except (OSError, UnicodeError) as exc:
            return ConnectionCheck(
                False, f"Cannot reach {where} ({self.protocol}): {exc}"
            )
        elapsed = (time.monotonic() - started) * 1000
        return ConnectionCheck(
            True, f"Connected to {where} ({self.protocol}) in {elapsed:.0f} ms."
        )

    # --- Internals --------------------------------------------------------------

    def _send_buffer(self, *, whole: bool) -> tuple[int, str]:
        """Send batches from the front of the buffer: all of it, or (``whole``
        false) only full batches. Returns the points sent and the error that
        made it give up, if any."""
        sent = failures = 0
        while self._buffer and (whole or len(self._buffer) >= self.batch_size):
            count = min(self.batch_size, len(self._buffer))
            batch = list(islice(self._buffer, count))
            try:
                self._send_batch(batch)
            except (OSError, UnicodeError) as exc:
                failures += 1
                self.errors += 1
                error = f"{self.protocol} {self.host}:{self.port}: {exc}"
                self._disconnect()
                if failures >= self.attempts:
                    logger.warning(
                        "Graphite: %s; %d point(s) kept for the next flush",
                        error,
                        len(self._buffer),
                    )
                    return sent, error
                logger.info("Graphite: %s; retrying (%d)", error, failures)
                self._pause(failures)
                continue
            for _ in range(count):
                self._buffer.popleft()
            sent += count
            self.sent += count
        return sent, ""  # everything went, if only after a retry

    def _result(self, sent: int, error: str) -> FlushResult:
        self.last_error = error
        result = FlushResult(
            sent=sent,
            pending=len(self._buffer),
            dropped=self._dropped_since_flush,
            rejected=self._rejected_since_flush,
            error=error,
        )
        self._dropped_since_flush = self._rejected_since_flush = 0
        return result

    def _send_batch(self, batch: list) -> None:
        if self.protocol == "dummy":
            for line in batch:
                logger.info("%s", line[:-1].decode("ascii"))
        elif self.protocol == "udp":
            sock = self._connection()
            for datagram in _datagrams(batch):
                sock.send(datagram)
        elif self.protocol == "pickle":
            self._connection().sendall(b"".join(_frames(batch)))
        else:
            self._connection().sendall(b"".join(batch))

    def _connection(self) -> socket.socket:
        if self._sock is not None and self._peer_closed(self._sock):
            # Carbon restarted or timed the idle connection out: writing to it
            # would "succeed" into a socket nobody reads.
            logger.info("Graphite: %s:%s closed the connection", self.host, self.port)
            self._disconnect()
        if self._sock is None:
            if self.protocol == "udp":
                family, kind, proto, _, address = socket.getaddrinfo(
                    self.host, self.port, type=socket.SOCK_DGRAM
                )[0]
                sock = socket.socket(family, kind, proto)
                sock.settimeout(self.timeout)
                try:
                    sock.connect(address)
                except OSError:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection((self.host, self.port), self.timeout)
            self._sock = sock
            self.connects += 1
        return self._sock

    def _peer_closed(self, sock: socket.socket) -> bool:
        if sock.type != socket.SOCK_STREAM:
            return False
        # Carbon never writes on these ports: readable means EOF or an error.
        sock.setblocking(False)
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True
        finally:
            sock.settimeout(self.timeout)

    def _disconnect(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _pause(self, failures: int) -> None:
        delay = min(self.backoff_max, self.backoff * 2 ** (failures - 1))
        if delay > 0:
            # Jitter, so clients that lost the same server do not come back in step.
            time.sleep(random.uniform(delay / 2, delay))


def _frames(items: list) -> list[bytes]:
    """Pickle frames of ``items``, each under ``MAX_FRAME_BYTES``, in order."""
    payload = pickle.dumps(items, protocol=2)
    if len(payload) + 4 < MAX_FRAME_BYTES:
        return [struct.pack("!L", len(payload)) + payload]
    if len(items) == 1:  # cannot happen with paths under MAX_LINE_BYTES
        raise ValueError(f"one point pickles to {len(payload)} bytes")
    parts = max(2, math.ceil(len(payload) / (MAX_FRAME_BYTES * 0.75)))
    size = math.ceil(len(items) / parts)
    return [
        frame
        for start in range(0, len(items), size)
        for frame in _frames(items[start : start + size])
    ]


def _datagrams(lines: list[bytes]) -> list[bytes]:
    """Lines packed into datagrams of at most ``MAX_DATAGRAM_BYTES``, never split."""
    datagrams: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        if current and size + len(line) > MAX_DATAGRAM_BYTES:
            datagrams.append(b"".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        datagrams.append(b"".join(current))
    return datagrams
