"""Open a model in Netron, served from 127.0.0.1 only (and to loopback Host names only), one server process per
model, always from a private copy of the model (Netron serves every file in and below the opened file's folder).

Netron's Python server keeps the model to serve in a class attribute, so one process serves only the last
model it was given: each model gets its own subprocess here. Two caveats of Netron itself:
- the Netron page loaded in the browser contacts outside hosts (ipinfo.io for a consent check, Google
  Analytics telemetry) unless the browser blocks them; the model file itself stays on 127.0.0.1;
- each Netron release refuses to run some months after it was built (its page asks to "update to the newest
  version" after 180 days): `open_in_netron` checks the build date and says `pip install -U netron`.
"""
from __future__ import annotations

import atexit
import datetime as dt
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import onnx

from .._optional import require
from ..errors import MissingDependencyError, WorkbenchError
from ..models.spec import Model

NETRON_MAX_AGE_DAYS = 180  # the age after which Netron's own page stops working
_START_TIMEOUT_S = 20.0
_SERVERS: dict[str, tuple[subprocess.Popen, Path]] = {}  # url -> (process, served file)
_COPIES: dict[str, Path] = {}  # model content hash -> its copy in a private folder made by this process
# The server dies with its parent: PR_SET_PDEATHSIG (Linux; only when started from the main thread, since the
# signal follows the thread that started the child) plus a watchdog that notices being re-parented.
_SERVE = """
import ctypes, os, shutil, signal, sys, threading, time
path, port, parent = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pdeathsig, owned = sys.argv[4] == "1", sys.argv[5] == "1"
def finish(*_):  # a private copy goes with its server, whoever ends it
    if owned:
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    os._exit(0)
signal.signal(signal.SIGTERM, finish)
if pdeathsig:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    finish()
if os.getppid() != parent:
    finish()
threading.Thread(target=watch, daemon=True).start()
import netron, netron.server
allowed = {f"{name}:{port}" for name in ("127.0.0.1", "localhost", "[::1]")}
handler = netron.server._HTTPRequestHandler
serve_get = handler.do_GET
def checked_get(self):  # a page on another name (DNS rebinding) must not read the model
    if self.headers.get("Host", "") not in allowed:
        body = b"Forbidden: this Netron server answers to 127.0.0.1 and localhost only."
        self.send_response(403)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return
    serve_get(self)
handler.do_GET = checked_get
netron.start(path, address=("127.0.0.1", port), browse=False)
netron.wait()
"""


def netron_age_days() -> float | None:
    """Days since the installed Netron was built (from the date its page carries); None when unknown."""
    netron = require("netron", extra="notebook", purpose="opening models in Netron")
    page = Path(netron.__file__).with_name("index.html")
    match = re.search(r'<meta name="date" content="([^"]+)">', page.read_text(encoding="utf-8")) \
        if page.is_file() else None
    if not match:
        return None
    built = dt.datetime.fromisoformat(match.group(1).replace(" ", "T")).replace(tzinfo=dt.timezone.utc)
    return (dt.datetime.now(dt.timezone.utc) - built).total_seconds() / 86400


def open_in_netron(path_or_model: str | Path | Model | onnx.ModelProto, *, port: int | None = None) -> str:
    """Serve a model file (or a Model / ModelProto, written to a temporary file) in Netron; return its URL.

    Opening the same file again returns the running server's URL.
    """
    age = netron_age_days()
    if age is not None and age > NETRON_MAX_AGE_DAYS:
        raise MissingDependencyError(
            f"The installed Netron was built {age:.0f} days ago and its page refuses to run after "
            f"{NETRON_MAX_AGE_DAYS} days: pip install -U netron.")
    path = _model_file(path_or_model)
    for url, (process, served) in list(_SERVERS.items()):
        if served == path and process.poll() is None:
            return url
    port = port or _free_port()
    main_thread = threading.current_thread() is threading.main_thread()
    owned = path in _COPIES.values()
    process = subprocess.Popen([sys.executable, "-c", _SERVE, str(path), str(port), str(os.getpid()),
                                "1" if main_thread else "0", "1" if owned else "0"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    _SERVERS[url] = (process, path)
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _SERVERS.pop(url)
            error = process.stderr.read().decode(errors="replace").strip().splitlines()
            raise WorkbenchError(f"Netron exited while starting on port {port}: {error[-1] if error else 'no output'}. "
                                 "Pick another port (port=...) or check that netron runs: python -m pip show netron.")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return url
        except OSError:
            time.sleep(0.05)  # polling the port the server is about to open
    stop(url)
    raise WorkbenchError(f"Netron did not start listening on 127.0.0.1:{port} within {_START_TIMEOUT_S:.0f} s: "
                         "try again with another port (port=...).")


def stop(url: str) -> None:
    """Stop the Netron server behind `url` (no-op when none is running there)."""
    entry = _SERVERS.pop(url, None)
    if entry:
        process = entry[0]
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stderr.close()


def stop_all() -> None:
    """Stop every Netron server this Python process started and remove the model copies it served."""
    for url in list(_SERVERS):
        stop(url)
    for path in _COPIES.values():
        shutil.rmtree(path.parent, ignore_errors=True)
    _COPIES.clear()


def servers() -> list[str]:
    """URLs of the running Netron servers."""
    return [url for url, (process, _) in _SERVERS.items() if process.poll() is None]


atexit.register(stop_all)


def _model_file(source) -> Path:
    """A private copy of the model to serve: Netron serves every file beside the one it opens, so never the
    user's own folder."""
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser().resolve()
        if not path.is_file():
            raise WorkbenchError(f"Model file {str(source)!r} does not exist: pass the path of an ONNX file, "
                                 "a Model or an onnx.ModelProto.")
        return _private_copy(path.read_bytes(), path.stem)
    if isinstance(source, onnx.ModelProto):
        source = Model.from_proto(source, name=source.graph.name or "model", source="onnx.ModelProto")
    if not isinstance(source, Model):
        raise WorkbenchError(f"Cannot open a {type(source).__name__} in Netron: pass an ONNX file path, "
                             "a Model or an onnx.ModelProto.")
    return _private_copy(source.serialized(), source.name)


def _private_copy(payload: bytes, name: str) -> Path:
    """One copy per model content (so opening the same model twice finds its running server), in a private
    folder made fresh by mkdtemp: nothing another user planted in the temp folder is ever served."""
    digest = hashlib.sha256(payload).hexdigest()
    path = _COPIES.get(digest)
    if path is None or not path.is_file():
        folder = Path(tempfile.mkdtemp(prefix="workbench-netron-"))
        path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.onnx"
        path.write_bytes(payload)
        _COPIES[digest] = path
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
