"""A checkpointd server started for a test or a script, and stopped with it.

    with LocalServer("target/debug/checkpointd") as server:
        client = Client(server.target)

The server listens on a free loopback port the kernel picks, keeps its data in a temporary
directory (or the PostgreSQL database given), and is stopped, killed if it must be, on exit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

# Seconds to wait for the server to listen, and for it to stop after SIGTERM.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class LocalServer:
    """A `checkpointd` child process on 127.0.0.1:<free port>."""

    def __init__(self, binary: str | os.PathLike[str], *, database: str | None = None) -> None:
        self.binary = str(binary)
        self.database = database
        self.target = ""
        self._data_dir = ""
        self._process: subprocess.Popen[str] | None = None
        self._log: list[str] = []

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if not Path(self.binary).is_file():
            raise FileNotFoundError(f"checkpointd binary {self.binary} not found; build it first")
        self._data_dir = tempfile.mkdtemp(prefix="checkpointd-py-")
        args = [self.binary, "--listen", "127.0.0.1:0", "--data-dir", self._data_dir]
        args += ["--log-format", "json", "--log", "info", "--gc-interval", "0s"]
        if self.database:
            args += ["--database", self.database]
        self._process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.target = self._wait_for_address()
        # Keep draining the log so the server never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()

    def _wait_for_address(self) -> str:
        assert self._process is not None and self._process.stderr is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            line = self._process.stderr.readline()
            if not line:
                break  # the process ended
            self._log.append(line)
            address = _listening_address(line)
            if address:
                return address
        self.stop()
        raise RuntimeError("checkpointd did not start; its log:\n" + "".join(self._log[-20:]))

    def _drain(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        for line in self._process.stderr:
            self._log.append(line)
            del self._log[:-200]

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(STOP_TIMEOUT)
            self._process = None
        if self._data_dir:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = ""

    @property
    def data_dir(self) -> str:
        """Where the server keeps its chunks (and its SQLite catalog without a database)."""
        return self._data_dir


def _listening_address(line: str) -> str | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if record.get("message") == "checkpointd listening":
        return record.get("addr")
    return None
