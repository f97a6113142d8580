from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

# Seconds the children get to stop after SIGTERM before they are killed.
STOP_GRACE = 10.0


class Command(BaseCommand):
    help = "Run the web server and the django-q2 cluster together; Ctrl-C stops both."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--addr", default="127.0.0.1:8000", help="host:port to serve on."
        )
        parser.add_argument(
            "--no-worker", action="store_true", help="Serve the web only, no qcluster."
        )

    def handle(self, *args, addr: str, no_worker: bool, **options) -> None:
        host, _, port = addr.rpartition(":")
        if not host or not port.isdigit():
            raise CommandError(f"--addr must be host:port, not {addr!r}")
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        commands = {"web": [sys.executable, manage, "runserver", "--noreload", addr]}
        if not no_worker:
            commands["worker"] = [sys.executable, manage, "qcluster"]
        self.children: dict[str, subprocess.Popen] = {}
        self.stopping = False
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        for name, argv in commands.items():
            # Own session: Ctrl-C reaches this supervisor only, and each child's
            # whole process group can be stopped by its PID.
            self.children[name] = subprocess.Popen(argv, start_new_session=True)
            self.stdout.write(f"started {name} (pid {self.children[name].pid})")
        self.stdout.write(
            f"Ops Portal at http://{addr}/admin/ — Ctrl-C stops everything."
        )
        exit_code = 0
        while not self.stopping:
            for name, child in self.children.items():
                code = child.poll()
                if code is not None:
                    self.stderr.write(
                        f"{name} exited with code {code}; stopping the rest."
                    )
                    exit_code = code or 1
                    self.stopping = True
                    break
            time.sleep(0.2)
        self._stop_all()
        if exit_code:
            raise SystemExit(exit_code)

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def _stop_all(self) -> None:
        # SIGTERM to each child's leader only: qcluster then stops its own workers
        # in order. Signalling the whole group at once makes its workers die under
        # it and the cluster hangs; the group is only for the SIGKILL fallback.
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for name, child in self.children.items():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(
                    f"{name} did not stop in {STOP_GRACE:.0f} s; killing it."
                )
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                child.wait()
        self.stdout.write("stopped.")
