"""Netron servers die with the process that started them and serve only private copies (issue 18.8)."""
from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import make_tiny_cnn
from workbench.errors import MissingDependencyError
from workbench.models.spec import Model

pytest.importorskip("netron")

_PARENT = """
import sys, threading, time
sys.path.insert(0, {tests!r})
from conftest import make_tiny_cnn
from workbench.models.spec import Model
from workbench.views import netron
model = Model.from_proto(make_tiny_cnn(), name="tiny", source="t")
opened = []
if {thread!r}:
    worker = threading.Thread(target=lambda: opened.append(netron.open_in_netron(model)))
    worker.start(); worker.join()
else:
    opened.append(netron.open_in_netron(model))
url = opened[0]
print(url, netron._SERVERS[url][0].pid, netron._SERVERS[url][1], flush=True)
time.sleep(600)
"""


def _gone(pid: int, port: int, timeout: float = 15.0) -> bool:
    """Wait (polling) until the server neither runs nor listens; a zombie left unreaped counts as gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
        except (OSError, IndexError):
            state = "gone"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                listening = True
        except OSError:
            listening = False
        if state in ("gone", "Z", "X") and not listening:
            return True
        time.sleep(0.1)  # polling for the server to exit
    return False


@pytest.mark.parametrize("how, thread", [(signal.SIGKILL, False), (signal.SIGTERM, False), (signal.SIGKILL, True)])
def test_server_dies_with_its_parent(how, thread):
    code = _PARENT.format(tests=str(Path(__file__).parent), thread=thread)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                              text=True)
    try:
        line = parent.stdout.readline()
        if not line:
            error = parent.stderr.read()
            if "refuses to run" in error:
                pytest.skip("Netron refuses to run (too old)")
            pytest.fail(f"parent did not start Netron: {error[-500:]}")
        url, pid, served = line.split()
        port, pid = int(url.rsplit(":", 1)[1]), int(pid)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # it was listening
        parent.send_signal(how)
        parent.wait(timeout=10)
        gone = _gone(pid, port)
        if not gone:
            os.kill(pid, signal.SIGKILL)  # leave no orphan behind when the test fails
        assert gone, f"Netron server {pid} outlived its parent ({how.name})"
        assert not Path(served).parent.exists()  # its private copy went with it
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_a_planted_file_is_never_served():
    from workbench.views import netron

    model = Model.from_proto(make_tiny_cnn(), name="tiny", source="t")
    predictable = Path(tempfile.gettempdir()) / "workbench-netron" / model.content_hash[:16] / "tiny.onnx"
    created = [folder for folder in (predictable.parent.parent, predictable.parent) if not folder.exists()]
    predictable.parent.mkdir(parents=True, exist_ok=True)
    predictable.write_bytes(b"planted")
    try:
        try:
            url = netron.open_in_netron(model)
        except MissingDependencyError as exc:
            pytest.skip(f"Netron refuses to run: {exc}")
        served = netron._SERVERS[url][1]
        assert served != predictable and served.read_bytes() == model.serialized()
        assert stat.S_IMODE(served.parent.stat().st_mode) == 0o700  # mkdtemp: private to this user
        netron.stop_all()
        assert not served.exists()  # the copy goes with its server
    finally:
        netron.stop_all()
        predictable.unlink()
        for folder in reversed(created):
            folder.rmdir()
