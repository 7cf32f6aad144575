"""Real sites for the tests: the repository's TypeScript site, as processes of their own.

- `driver`: test/fixtures/site-driver.ts, a site whose agent side the tests
  steer line by line (send a task with these tensors, abort it, say bye, cut
  the connections of a TCP proxy in front of it).
- `admin_site`: `campfire site` itself (bin/campfire.mjs), with an admin token
  and a data directory, for the Session tests.

Both listen on 127.0.0.1, port 0. They need the repository (node_modules
installed): run from the repository, as `npm test` does.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pytest

import campfire
from campfire.common.v1 import tensor_pb2

REPO = Path(__file__).resolve().parents[3]
NODE = shutil.which("node")
START_TIMEOUT = 60.0


def node_process(script: list[str], env: dict[str, str]) -> subprocess.Popen:
    if NODE is None or not (REPO / "node_modules" / "tsx").exists():
        pytest.skip(f"the real site needs node and the repository's node_modules (run npm install in {REPO})")
    return subprocess.Popen(
        [NODE, "--import", "tsx", *script],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "LOG_FORMAT": "json", **env},
    )


def _first_json_line(process: subprocess.Popen, accept) -> dict:
    """The first stdout line that is JSON and that `accept` takes; fails with stderr when the process dies first."""
    found: "queue.Queue[Optional[dict]]" = queue.Queue()

    def read() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict) and accept(value):
                found.put(value)
                return
        found.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        value = found.get(timeout=START_TIMEOUT)
    except queue.Empty:
        value = None
    if value is None:
        process.kill()
        raise RuntimeError(f"the site did not start: {process.stderr.read()[-3000:] if process.stderr else ''}")
    return value


def wire_tensor(name: str, array: np.ndarray) -> dict:
    tensor = campfire.from_numpy(name, array)
    return {"name": name, "dtype": tensor.dtype, "shape": list(tensor.shape), "data": base64.b64encode(tensor.data).decode()}


def array_of(wire: dict) -> np.ndarray:
    tensor = tensor_pb2.Tensor(name=wire["name"], dtype=wire["dtype"], shape=wire["shape"], data=base64.b64decode(wire["data"]))
    return campfire.to_numpy(tensor)


class Driver:
    """test/fixtures/site-driver.ts: one command line at a time, answers matched by id."""

    def __init__(self) -> None:
        self.process = node_process(["test/fixtures/site-driver.ts"], {"LOG_LEVEL": os.environ.get("LOG_LEVEL", "warn")})
        ports = _first_json_line(self.process, lambda value: "port" in value)
        self.port: int = ports["port"]
        self.proxy_port: int = ports["proxy_port"]
        self.address = f"127.0.0.1:{self.port}"
        self.proxy_address = f"127.0.0.1:{self.proxy_port}"
        self._ids = itertools.count(1)
        self._waiting: dict[int, "queue.Queue[dict]"] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            try:
                reply = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                waiting = self._waiting.pop(reply.get("id"), None)
            if waiting is not None:
                waiting.put(reply)

    def start(self, cmd: str, **fields: Any) -> "queue.Queue[dict]":
        """Sends a command; the returned queue gets its answer."""
        command_id = next(self._ids)
        answer: "queue.Queue[dict]" = queue.Queue()
        with self._lock:
            self._waiting[command_id] = answer
            self.process.stdin.write(json.dumps({"id": command_id, "cmd": cmd, **fields}) + "\n")  # type: ignore[union-attr]
            self.process.stdin.flush()  # type: ignore[union-attr]
        return answer

    def __call__(self, cmd: str, timeout: float = 30.0, **fields: Any) -> dict:
        return self.start(cmd, **fields).get(timeout=timeout)

    def close(self) -> None:
        try:
            self.process.stdin.close()  # type: ignore[union-attr]
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()


@pytest.fixture(scope="session")
def driver() -> Iterator[Driver]:
    site = Driver()
    yield site
    site.close()


class BackgroundProcess:
    """A node process of the repository (a site, an agent) that is ready once it logs the JSON line `accept` takes."""

    def __init__(self, process: subprocess.Popen, accept) -> None:
        self.process = process
        self.ready = _first_json_line(process, accept)
        self.address = ""
        # Keep reading its output, so that a full pipe never stalls it.
        threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()  # type: ignore[union-attr]
        threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()  # type: ignore[union-attr]

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


class AdminSite(BackgroundProcess):
    """`campfire site` with two admin tokens: a project_admin and a member."""

    TOKEN = "py-admin-token"
    VIEWER_TOKEN = "py-viewer-token"

    def __init__(self, data_dir: Path) -> None:
        tokens = f"{self.TOKEN}=py-admin:project_admin,{self.VIEWER_TOKEN}=py-viewer:member"
        command = ["bin/campfire.mjs", "site", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir), "--tokens", tokens, "--heartbeat-interval-ms", "200", "--schedule-interval-ms", "100"]
        super().__init__(node_process(command, {"LOG_LEVEL": "info"}), lambda line: line.get("msg") == "site listening")
        self.address = f"127.0.0.1:{self.ready['port']}"


@pytest.fixture(scope="session")
def admin_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminSite]:
    site = AdminSite(tmp_path_factory.mktemp("site-data"))
    yield site
    site.close()
