"""App mode lifetime and exposure (issue 28, finding 4): validated ports, a Host check, an optional token, kernels
culled after their page closes, and nothing left serving after `kill -9` of the app."""
from __future__ import annotations

import http.client
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from workbench.app import serve, voila_command
from workbench.cli import main
from workbench.errors import WorkbenchError

psutil = pytest.importorskip("psutil")


@pytest.mark.parametrize("port", [0, -1, 65536, 99999])
def test_the_app_refuses_a_port_out_of_range(port, capsys):
    pytest.importorskip("voila")
    assert main(["app", "digits-cnn", "--port", str(port)]) == 2
    error = capsys.readouterr().err
    assert f"--port {port}" in error and "1-65535" in error and "Traceback" not in error


def test_the_voila_command_checks_hosts_culls_kernels_and_takes_a_token(tmp_path):
    command = voila_command(tmp_path / "a.ipynb", host="127.0.0.1", port=20000, cull_idle_s=60, cull_interval_s=10,
                            token="s3cret", parent=os.getpid())
    text = " ".join(command)
    assert "--MappingKernelManager.cull_idle_timeout=60" in text and "cull_interval=10" in text
    assert "'allow_remote_access': False" in text and "--Voila.token=s3cret" in text
    remote = " ".join(voila_command(tmp_path / "a.ipynb", host="0.0.0.0", port=20000, allow_remote=True,
                                    parent=os.getpid()))
    assert "'allow_remote_access': True" in remote
    with pytest.raises(WorkbenchError, match="cull"):
        serve("digits-cnn", cull_idle_s=0)


def _get(port: int, path: str = "/", host: str | None = None, timeout: float = 240) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Host": host or f"127.0.0.1:{port}"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _kernels(pid: int) -> list:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [p for p in children if _is_kernel(p)]


def _is_kernel(process) -> bool:
    try:
        return "ipykernel_launcher" in " ".join(process.cmdline())
    except psutil.Error:
        return False


def _listening(port: int) -> bool:
    return any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
               for c in psutil.net_connections("inet"))


def _until(condition, timeout: float) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass (the server acts on its own clock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


@pytest.fixture
def app(tmp_path):
    pytest.importorskip("voila")
    port = random.randint(20000, 30000)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_DATA_DIR=str(tmp_path / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), IPYTHONDIR=str(tmp_path / "ipython"),
               PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(sys.path))
    process = subprocess.Popen([sys.executable, "-m", "workbench", "app", "digits-cnn", "--runs", "1",
                                "--cache", str(tmp_path / "cache"), "--port", str(port),
                                "--cull-idle", "2", "--cull-interval", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(process.stdout), daemon=True).start()
    everything = []
    try:
        if not _until(lambda: _listening(port) or process.poll() is not None, 90) or process.poll() is not None:
            raise RuntimeError("the app did not start:\n" + "".join(log[-30:]))
        everything = psutil.Process(process.pid).children(recursive=True)
        yield process, port, log
    finally:
        for child in [*everything, *_kernels(process.pid)]:
            try:
                child.kill()
            except psutil.Error:
                pass
        if process.poll() is None:
            process.kill()
        process.wait()


def test_pages_closed_leave_no_kernel_and_kill_9_leaves_nothing_serving(app):
    process, port, log = app
    status, body = _get(port, host="evil.example:80")  # DNS rebinding: a foreign name for our address
    assert status == 403, body[:200]
    for _ in range(10):  # load the page and close it (the connection ends, no websocket stays)
        status, body = _get(port)
        assert status == 200 and b"TensorRT Workbench" in body
    voila = psutil.Process(process.pid).children()[0]
    assert _until(lambda: not _kernels(voila.pid), 30), \
        f"{len(_kernels(voila.pid))} kernels alive after the cull interval"
    status, _ = _get(port)  # one more page: its kernel is alive while it is fresh
    assert status == 200 and len(_kernels(voila.pid)) <= 1
    kernels = _kernels(voila.pid)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert _until(lambda: not _listening(port), 5), "the app's port still listens 5 s after kill -9"
    assert _until(lambda: not voila.is_running() and not any(k.is_running() for k in kernels), 5)
