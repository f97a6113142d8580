"""Graphite client throughput into a real carbon-cache, against a bare sender.

Starts carbon-cache 1.1.10 (the installer and starter of tests/fixtures/carbon.py)
in a temporary GRAPHITE_ROOT, with 1-second whisper slots kept long enough that
every point of a run lands in a slot of its own. Then, for plaintext and pickle,
``--runs`` times each, in turn:

- client: ``GraphiteClient(...).send(points)`` (``--batch-size`` points a batch,
  a buffer as big as the run), then ``close()``;
- bare: all lines (or pickle frames of ``--batch-size`` points) built in one
  go, the simplest way, and ``sendall`` on one socket.

Both send the same ``--points`` points over ``--series`` series (timestamps one
second apart within a series, ints and floats mixed), under a prefix of their own
for each run, so each run writes new files. A run is timed from the first line
built until carbon has read the whole stream: the sender half-closes and waits
for carbon to close its side, which Twisted does only once it has read
everything. The sender's CPU time is printed too. After each run the script
waits until every point is on disk (counted in all the run's whisper files);
a point missing is a loss: exit status 1.

    .venv/bin/python bench/importers.py [--points 200000] [--series 1000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, STARTED, _stop, percentile, stop

# Before the project's packages: this file is bench/importers.py, and the
# script's folder comes first on sys.path.
sys.path.insert(0, str(ROOT))

from importers.graphite import GraphiteClient  # noqa: E402
from tests.fixtures.carbon import Carbon, start_carbon  # noqa: E402
from tests.fixtures.processes import wait_for  # noqa: E402

PROTOCOLS = ("plaintext", "pickle")
SENDERS = ("client", "bare")
GOAL = 0.8


def make_points(
    prefix: str, points: int, series: int
) -> tuple[list[tuple[str, float | int, int]], list[str]]:
    """``points`` points round-robin over ``series`` metrics, and the metrics."""
    metrics = [f"{prefix}.series-{i:05d}.value" for i in range(series)]
    per_series = -(-points // series)
    start = int(time.time()) - per_series - 60
    return [
        (metrics[i % series], i if i % 2 else i / 8, start + i // series)
        for i in range(points)
    ], metrics


def drain(sock: socket.socket) -> None:
    """Half-close and wait until the server, having read everything, closes."""
    sock.shutdown(socket.SHUT_WR)
    while sock.recv(65536):
        pass
    sock.close()


def send_bare(port: int, protocol: str, points: list, batch_size: int) -> None:
    if protocol == "plaintext":
        data = "".join(f"{p} {v!r} {t}\n" for p, v, t in points).encode()
    else:
        payloads = (
            pickle.dumps(
                [(p, (t, v)) for p, v, t in points[i : i + batch_size]], protocol=2
            )
            for i in range(0, len(points), batch_size)
        )
        data = b"".join(struct.pack("!L", len(x)) + x for x in payloads)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(data)
    drain(sock)


def send_client(port: int, protocol: str, points: list, batch_size: int) -> None:
    client = GraphiteClient(
        "127.0.0.1",
        port,
        protocol=protocol,
        batch_size=batch_size,
        buffer_limit=len(points),
        timeout=60,
    )
    result = client.send(points)
    client.close()  # waits for carbon to have read everything
    if result.sent != len(points) or not result.ok:
        raise SystemExit(f"client: {result}")


def one_run(
    carbon: Carbon, protocol: str, sender: str, run: int, args: argparse.Namespace
) -> tuple[float, float, float]:
    """Points per second, sender CPU seconds, seconds until all were on disk."""
    points, metrics = make_points(
        f"bench.{protocol}.{sender}.run{run}", args.points, args.series
    )
    port = carbon.line_port if protocol == "plaintext" else carbon.pickle_port
    send = send_client if sender == "client" else send_bare
    cpu, began = time.process_time(), time.perf_counter()
    send(port, protocol, points, args.batch_size)
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu

    stored = 0

    def all_stored() -> bool:
        nonlocal stored
        carbon.check_running()
        stored = carbon.count(metrics)
        return stored >= len(points)

    try:
        wait_for(all_stored, timeout=args.store_timeout, interval=0.2)
    except TimeoutError:
        pass
    on_disk = time.perf_counter() - began
    if stored != len(points):
        print(
            f"!! {protocol} {sender} run {run}: {stored} of {len(points)} points "
            f"stored after {on_disk:.0f} s",
            file=sys.stderr,
        )
        raise SystemExit(1)
    return len(points) / elapsed, cpu, on_disk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=200_000, help="points a run")
    parser.add_argument("--series", type=int, default=1000, help="series a run")
    parser.add_argument("--runs", type=int, default=3, help="runs of each figure")
    parser.add_argument("--batch-size", type=int, default=1000, help="points a batch")
    parser.add_argument(
        "--store-timeout",
        type=float,
        default=300,
        help="seconds to wait for carbon to store a run",
    )
    args = parser.parse_args()
    per_series = -(-args.points // args.series)

    tmp = tempfile.mkdtemp(prefix="bench-importers-")
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    try:
        # Slots for every timestamp of a run, with room for the minutes it takes.
        carbon = start_carbon(Path(tmp), retentions=f"1s:{per_series + 900}s")
        STARTED.append(carbon.proc)
        print(
            f"bench/importers.py: Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; carbon-cache "
            f"1.1.10 on 127.0.0.1 ({tmp}); {args.points} points over "
            f"{args.series} series, batches of {args.batch_size}, {args.runs} runs",
            flush=True,
        )
        rates: dict[tuple[str, str], list[float]] = {}
        cpus: dict[tuple[str, str], list[float]] = {}
        disks: dict[tuple[str, str], list[float]] = {}
        for run in range(1, args.runs + 1):
            for protocol in PROTOCOLS:
                # Alternate who goes first, so neither always meets a warmer carbon.
                order = SENDERS if run % 2 else SENDERS[::-1]
                for sender in order:
                    rate, cpu, on_disk = one_run(carbon, protocol, sender, run, args)
                    key = (protocol, sender)
                    rates.setdefault(key, []).append(rate)
                    cpus.setdefault(key, []).append(cpu)
                    disks.setdefault(key, []).append(on_disk)
                    print(
                        f"  run {run} {protocol:9} {sender:6} {rate:>9,.0f} points/s"
                        f"  sender CPU {cpu:.2f} s  all on disk after {on_disk:.1f} s",
                        flush=True,
                    )
        print()
        print("medians (points/s until carbon has read the stream; nothing lost):")
        for protocol in PROTOCOLS:
            client = percentile(rates[(protocol, "client")], 50)
            bare = percentile(rates[(protocol, "bare")], 50)
            ratio = client / bare
            print(
                f"  {protocol:9} client {client:>9,.0f}  bare {bare:>9,.0f}  "
                f"ratio {ratio:.2f} ({'meets' if ratio >= GOAL else 'MISSES'} the "
                f"goal >= {GOAL})  sender CPU client "
                f"{percentile(cpus[(protocol, 'client')], 50):.2f} s, bare "
                f"{percentile(cpus[(protocol, 'bare')], 50):.2f} s"
            )
        print(
            "medians (points/s until every point is in its whisper file, polled"
            " every 0.2 s by counting all the run's files):"
        )
        for protocol in PROTOCOLS:
            stored = {
                sender: args.points / percentile(disks[(protocol, sender)], 50)
                for sender in SENDERS
            }
            ratio = stored["client"] / stored["bare"]
            print(
                f"  {protocol:9} client {stored['client']:>9,.0f}  bare"
                f" {stored['bare']:>9,.0f}  ratio {ratio:.2f}"
                f" ({'meets' if ratio >= GOAL else 'MISSES'} the goal >= {GOAL})"
            )
    finally:
        for proc in STARTED:
            stop(proc, timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
