"""The Graphite client against a real carbon-cache 1.1.10 (tests.fixtures.carbon),
and against small loopback servers where carbon cannot show what is on the wire
(frame sizes, connections, a sink that is down, then up)."""

from __future__ import annotations

import logging
import pickle
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from importers.graphite import (
    MAX_DATAGRAM_BYTES,
    MAX_FRAME_BYTES,
    MAX_LINE_BYTES,
    GraphiteClient,
    metric_name,
    sanitize_path,
    validate_point,
)
from tests.fixtures.processes import free_port, wait_for

SAFE_PATH = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


def uses_carbon(test):
    """The tests that talk to carbon share one carbon-cache: one worker runs them."""
    return pytest.mark.slow(pytest.mark.xdist_group("carbon")(test))


class Sink:
    """A loopback TCP server recording the bytes of each connection, one at a
    time; with ``close_after`` it closes a connection once it has read that many
    bytes (with ``reset``, abortively: an RST instead of a FIN)."""

    def __init__(
        self, port: int = 0, *, close_after: int | None = None, reset: bool = False
    ):
        self.server = socket.create_server(("127.0.0.1", port))
        self.port = self.server.getsockname()[1]
        self.close_after = close_after
        self.reset = reset
        self.received: list[bytes] = []  # one entry per finished connection
        self.closed = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:  # closed by stop()
                return
            data = bytearray()
            while chunk := conn.recv(65536):
                data += chunk
                if self.close_after and len(data) >= self.close_after:
                    if self.reset:
                        linger = struct.pack("ii", 1, 0)
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    break
            # Recorded before closing: a client's close() returns once it sees
            # the server close, and the test reads ``received`` right after.
            self.received.append(bytes(data))
            conn.close()
            self.closed += 1

    @property
    def lines(self) -> list[bytes]:
        return b"".join(self.received).splitlines(keepends=True)

    def stop(self) -> None:
        # close() alone does not wake a thread blocked in accept(); shutdown does
        try:
            self.server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.server.close()
        self.thread.join(timeout=5)


@pytest.fixture
def sinks() -> Iterator[list[Sink]]:
    started: list[Sink] = []
    yield started
    for sink in started:
        sink.stop()


def _points(prefix: str, values: list[float | int]) -> list[tuple[str, float, int]]:
    """Points of one metric, one second apart, ending a minute ago."""
    start = int(time.time()) - 60 - len(values)
    return [(prefix, value, start + i) for i, value in enumerate(values)]


def _unique(request: pytest.FixtureRequest, *levels: str) -> str:
    return metric_name("tests", request.node.name, *levels)


# --- Against carbon ---------------------------------------------------------------


@uses_carbon
@pytest.mark.parametrize("protocol", ["plaintext", "pickle"])
def test_it_stores_the_last_point_of_every_batch(carbon, request, protocol):
    metric = _unique(request)
    points = _points(metric, [1, 2, 3, 4, 5])
    port = carbon.line_port if protocol == "plaintext" else carbon.pickle_port

    with GraphiteClient("127.0.0.1", port, protocol=protocol, batch_size=2) as client:
        result = client.send(points)

    assert (result.sent, result.pending, result.error) == (5, 0, "")
    stored = carbon.wait_for_points(metric, [t for _, _, t in points])
    assert stored == {t: float(v) for _, v, t in points}


@uses_carbon
@pytest.mark.parametrize("protocol", ["plaintext", "pickle"])
def test_it_stores_values_exactly(carbon, request, protocol):
    metric = _unique(request)
    values = [1234567, 0.1, 1e-7, 12345.678901, -42, 2**40, 1e300]
    points = _points(metric, values)
    port = carbon.line_port if protocol == "plaintext" else carbon.pickle_port

    with GraphiteClient("127.0.0.1", port, protocol=protocol) as client:
        client.send(points)

    stored = carbon.wait_for_points(metric, [t for _, _, t in points])
    assert [stored[t] for _, _, t in points] == values


@uses_carbon
def test_it_delivers_over_udp(carbon, request):
    metric = _unique(request)
    points = _points(metric, [7, 0.25, 9])

    with GraphiteClient("127.0.0.1", carbon.udp_port, protocol="udp") as client:
        result = client.send(points)

    assert result.sent == 3
    stored = carbon.wait_for_points(metric, [t for _, _, t in points])
    assert stored == {t: float(v) for _, v, t in points}


@uses_carbon
def test_it_sanitises_names_into_distinct_paths(carbon, request):
    names = ["my app", "my.app", "my/app", "my_app", "my_20app", "ünï cödé", "a;b=c"]
    metrics = [_unique(request, name, "crashes") for name in names]
    timestamp = int(time.time()) - 60

    with GraphiteClient("127.0.0.1", carbon.line_port) as client:
        client.send([(m, i, timestamp) for i, m in enumerate(metrics)])

    assert len(set(metrics)) == len(names)
    assert all(SAFE_PATH.fullmatch(m) for m in metrics)
    for i, metric in enumerate(metrics):
        assert carbon.wait_for_points(metric, [timestamp]) == {timestamp: float(i)}
    # one file per name, none shared
    assert len({carbon.wsp(m) for m in metrics}) == len(names)


@uses_carbon
def test_it_tests_the_connection(carbon):
    client = GraphiteClient("127.0.0.1", carbon.line_port)
    check = client.test_connection()
    assert check.ok, check.message
    assert check.message.startswith(f"Connected to 127.0.0.1:{carbon.line_port}")


# --- Names and points -------------------------------------------------------------


def test_it_escapes_everything_outside_the_safe_alphabet():
    assert metric_name("My App", "crash.rate") == "My_20App.crash_2erate"
    assert metric_name("a_b", "a/b", "é", 42) == "a_5fb.a_2fb._c3_a9.42"
    assert sanitize_path("apps.My App.daily") == "apps.My_20App.daily"
    # "_" only starts an escape, so an escaped name cannot be forged by a raw one
    assert metric_name("a b") != metric_name("a_20b")


@pytest.mark.parametrize("path", ["a..b", ".a", "a.", ""])
def test_it_refuses_empty_levels(path):
    with pytest.raises(ValueError, match="empty level"):
        sanitize_path(path)


def test_it_rejects_invalid_points_and_counts_them(caplog):
    client = GraphiteClient(protocol="dummy")
    overlong = "a." + "b" * MAX_LINE_BYTES

    with caplog.at_level(logging.WARNING, logger="importers.graphite"):
        accepted = client.extend(
            [
                ("ok.path", 1, 100),
                ("ok.path", float("nan"), 101),
                ("ok.path", float("inf"), 102),
                ("ok.path", True, 103),
                ("has space", 1, 104),
                (overlong, 1, 105),
                ("ok.path", 1, -1),
            ]
        )
    result = client.flush()

    assert accepted == 1
    assert (result.sent, result.rejected, result.dropped) == (1, 6, 0)
    assert client.rejected == 6 and client.dropped == 0
    assert "rejected 6 invalid point(s)" in caplog.text
    with pytest.raises(ValueError, match="not finite"):
        validate_point("ok.path", float("nan"), 100)


def test_it_keeps_plaintext_lines_under_carbons_limit(sinks):
    sinks.append(sink := Sink())
    longest = "a." + "b" * (MAX_LINE_BYTES - len("a. 1 100\n"))
    client = GraphiteClient("127.0.0.1", sink.port)

    assert client.add(longest, 1, 100)
    assert not client.add(longest + "b", 1, 100)
    client.add("after.it", 2, 100)
    client.flush()
    client.close()

    assert [len(line) for line in sink.lines] == [
        MAX_LINE_BYTES,
        len(b"after.it 2 100\n"),
    ]
    assert client.rejected == 1


# --- On the wire ------------------------------------------------------------------


def test_it_splits_pickle_frames_under_one_mib(sinks):
    sinks.append(sink := Sink())
    points = [
        (f"{'pickled.' * 10}series-{i % 1000:04d}", i * 0.5, 1_700_000_000 + i)
        for i in range(50_000)
    ]
    client = GraphiteClient(
        "127.0.0.1",
        sink.port,
        protocol="pickle",
        batch_size=50_000,
        buffer_limit=50_000,
    )

    result = client.send(points)
    client.close()

    assert result.sent == 50_000
    data, frames, unpickled = sink.received[0], [], []
    while data:
        (length,) = struct.unpack("!L", data[:4])
        frames.append(4 + length)
        unpickled += pickle.loads(data[4 : 4 + length])
        data = data[4 + length :]
    assert len(frames) > 1  # one batch of 50k points is ~5 MB of pickle
    assert max(frames) < MAX_FRAME_BYTES
    assert unpickled == [(path, (t, v)) for path, v, t in points]
    assert all(type(path) is str for path, _ in unpickled)


def test_it_packs_udp_datagrams_without_splitting_lines():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    points = [(f"udp.series-{i:04d}", i / 3, 1_700_000_000 + i) for i in range(500)]
    expected = b"".join(f"{p} {v!r} {t}\n".encode() for p, v, t in points)

    with (
        receiver,
        GraphiteClient(
            "127.0.0.1", receiver.getsockname()[1], protocol="udp"
        ) as client,
    ):
        client.send(points)
        datagrams, size = [], 0
        while size < len(expected):
            datagrams.append(receiver.recv(65536))
            size += len(datagrams[-1])

    assert max(len(d) for d in datagrams) <= MAX_DATAGRAM_BYTES
    assert all(d.endswith(b"\n") for d in datagrams)
    assert b"".join(datagrams) == expected


def test_it_logs_lines_with_the_dummy_protocol(caplog, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the dummy protocol must not open sockets")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    client = GraphiteClient(protocol="dummy")

    with caplog.at_level(logging.INFO, logger="importers.graphite"):
        result = client.send([("a.b", 1234567, 100), ("a.c", 0.1, 101)])

    assert result.sent == 2 and client.connects == 0
    assert [r.getMessage() for r in caplog.records] == [
        "a.b 1234567 100",
        "a.c 0.1 101",
    ]
    assert client.test_connection().ok


def test_it_reuses_one_connection_across_batches(sinks):
    sinks.append(sink := Sink())
    client = GraphiteClient("127.0.0.1", sink.port, batch_size=10)

    client.send([("a.b", i, 1000 + i) for i in range(25)])
    client.send([("a.b", i, 2000 + i) for i in range(25)])
    client.close()

    assert client.connects == 1 and len(sink.received) == 1
    assert len(sink.lines) == 50 and all(line.endswith(b"\n") for line in sink.lines)


def test_it_keeps_points_while_the_sink_is_down(sinks):
    port = free_port()  # nobody listens there
    client = GraphiteClient("127.0.0.1", port, attempts=2, backoff=0)
    points = [("down.then.up", i, 1000 + i) for i in range(10)]

    result = client.send(points)

    assert (result.sent, result.pending, result.dropped) == (0, 10, 0)
    assert "refused" in result.error and not result.ok
    assert client.errors == 2

    sinks.append(sink := Sink(port))
    result = client.flush()
    client.close()

    assert (result.sent, result.pending, result.error) == (10, 0, "")
    assert sink.lines == [f"down.then.up {i} {1000 + i}\n".encode() for i in range(10)]
    assert client.dropped == 0


def test_it_drops_the_oldest_points_only_past_the_buffer_limit(sinks):
    port = free_port()
    client = GraphiteClient("127.0.0.1", port, buffer_limit=5, attempts=1, backoff=0)

    client.send([("full", i, 1000 + i) for i in range(3)])
    assert (client.pending, client.dropped) == (3, 0)
    result = client.send([("full", i, 1000 + i) for i in range(3, 7)])
    assert (result.pending, result.dropped, client.dropped) == (5, 2, 2)

    sinks.append(sink := Sink(port))
    result = client.flush()
    client.close()

    assert result.sent == 5 and result.dropped == 0
    assert sink.lines == [f"full {i} {1000 + i}\n".encode() for i in range(2, 7)]


def test_it_sends_more_than_the_buffer_holds_in_one_call(sinks):
    sinks.append(sink := Sink())
    client = GraphiteClient("127.0.0.1", sink.port, batch_size=5, buffer_limit=10)

    result = client.send(("many", i, 1000 + i) for i in range(100))
    client.close()

    assert (result.sent, result.pending, result.dropped) == (100, 0, 0)
    assert sink.lines == [f"many {i} {1000 + i}\n".encode() for i in range(100)]


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_it_reconnects_after_the_server_closes_the_connection(sinks, reset):
    first = [(f"first.{i}", i, 1000) for i in range(3)]
    size = sum(len(f"{p} {v} {t}\n") for p, v, t in first)
    # the server hangs up once it has read the first flush, as carbon does
    # when it restarts or times an idle client out
    sinks.append(sink := Sink(close_after=size, reset=reset))
    client = GraphiteClient("127.0.0.1", sink.port, batch_size=1)

    client.send(first)
    wait_for(lambda: sink.closed == 1, timeout=5, interval=0.01)
    result = client.send([("second", 2, 1000)])
    client.close()

    assert result.ok and result.sent == 1
    assert sink.received[1] == b"second 2 1000\n"
    assert client.connects == 2


def test_it_reports_a_closed_port():
    port = free_port()
    check = GraphiteClient("127.0.0.1", port, timeout=2).test_connection()

    assert not check.ok
    assert f"Cannot reach 127.0.0.1:{port} (plaintext)" in check.message


def test_it_reports_the_address_for_udp():
    check = GraphiteClient("127.0.0.1", 2003, protocol="udp").test_connection()

    assert check.ok and "cannot be confirmed" in str(check)
