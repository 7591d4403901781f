"""App mode: the explorer as a standalone web page, served by Voila (no code cells, no notebook interface).

`python -m workbench app` writes a one-cell notebook that creates the explorer into a fresh private temporary
folder and serves it with Voila on 127.0.0.1. Another address needs `allow_remote=True` (`--allow-remote`) and
prints a warning: anyone who reaches the page can run models on this machine.

Exposure and lifetime (docs/reliability.md): requests whose Host header is not a loopback name are refused unless
`allow_remote` (a DNS-rebinding page cannot drive the app); an optional token; each page's kernel is shut down
`cull_idle_s` after its page closed; Voila dies with the app, also on `kill -9` of it (PR_SET_PDEATHSIG, and a
watchdog noticing the re-parenting where prctl is missing), and its kernels follow Voila (ipykernel's parent poller).
"""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from ._optional import require
from .errors import WorkbenchError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8866
DEFAULT_CULL_IDLE_S = 120  # a closed page's kernel (~270 MB) is shut down this long after its last activity
DEFAULT_CULL_INTERVAL_S = 30
# Voila, run so that it stops (SIGTERM: it shuts its kernels down) when the app process dies, however it dies.
_SUPERVISED_VOILA = """
import ctypes, os, signal, sys, threading, time
parent = int(sys.argv[1])
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != parent:
    sys.exit(0)
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)  # Voila stops and shuts its kernels down...
    time.sleep(2.5)
    os._exit(0)  # ...or, on a loaded machine, is ended so its port closes at once (kernels follow their parent)
threading.Thread(target=watch, daemon=True).start()
sys.argv = ["voila", *sys.argv[2:]]
from voila.app import main
sys.exit(main())
"""


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def app_notebook(model: str, *, backend: str = "onnxruntime", cache_dir=None, shared_cache=None,
                 runs: int | None = None, threads: int | None = None) -> dict:
    """The notebook Voila serves: a title and one code cell building the explorer (Voila shows its output only)."""
    # The first result is computed (explorer.wait()) before the page shows the widgets: plotly figure widgets
    # changed from a thread while the browser is still creating them fail to initialise. Later selections go to
    # the explorer's scheduler like in a notebook: cached ones at once, a newer one superseding the one computing.
    arguments = {"backend": backend, "cache_dir": str(cache_dir) if cache_dir else None,
                 "shared_cache": str(shared_cache) if shared_cache else None, "threads": threads}
    if runs is not None:
        arguments["runs"] = runs
    call = ", ".join([repr(model), *(f"{name}={value!r}" for name, value in arguments.items())])
    code = ("from workbench.ui import Explorer\n"
            f"explorer = Explorer({call})\n"
            "explorer.wait()\n"
            "explorer")
    return {"nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                         "language_info": {"name": "python"}},
            "cells": [{"cell_type": "markdown", "id": "title", "metadata": {},
                       "source": "## TensorRT Workbench\nPick a model, engine and precision: the graph before and "
                                 "after fusion, per-layer latency and drift follow."},
                      {"cell_type": "code", "id": "explorer", "metadata": {}, "execution_count": None,
                       "outputs": [], "source": code}]}


def voila_command(notebook: Path, *, host: str, port: int, parent: int, allow_remote: bool = False,
                  token: str | None = None, cull_idle_s: int = DEFAULT_CULL_IDLE_S,
                  cull_interval_s: int = DEFAULT_CULL_INTERVAL_S) -> list[str]:
    """The Voila server command line (supervised: it stops when process `parent` dies): no browser, source cells
    stripped, Host header checked (loopback names only unless `allow_remote`), idle kernels of closed pages culled,
    a token when given."""
    tornado = {"allow_remote_access": allow_remote, "local_hostnames": ["localhost"]}
    return [sys.executable, "-c", _SUPERVISED_VOILA, str(parent), str(notebook), "--no-browser",
            f"--Voila.ip={host}", f"--port={port}", "--Voila.port_retries=0", "--strip_sources=True",
            "--show_tracebacks=False", f"--Voila.root_dir={notebook.parent}",
            f"--Voila.tornado_settings={tornado!r}",
            f"--MappingKernelManager.cull_idle_timeout={cull_idle_s}",
            f"--MappingKernelManager.cull_interval={cull_interval_s}",
            "--MappingKernelManager.cull_connected=False",  # a page still open keeps its kernel
            "--template=workbench",  # the offline page (see voila_environment)
            *([f"--Voila.token={token}"] if token else [])]


def check_serving_options(*, port: int, cull_idle_s: int, cull_interval_s: int, token: str | None) -> None:
    """Typed errors for a port outside 1-65535 (0 would listen on a port nobody is told), culling settings that
    are not positive, a token with characters a URL cannot carry as is."""
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise WorkbenchError(f"--port {port} is not a usable port: give a number in 1-65535 (default {DEFAULT_PORT}).")
    for option, value in (("--cull-idle", cull_idle_s), ("--cull-interval", cull_interval_s)):
        if not isinstance(value, int) or value < 1:
            raise WorkbenchError(f"{option} {value}: give a positive number of seconds (a closed page's kernel is "
                                 f"shut down after --cull-idle, checked every --cull-interval).")
    if token is not None and (not token or not all(c.isalnum() or c in "-_." for c in token)):
        raise WorkbenchError("--token: use letters, digits, '-', '_' or '.' only (e.g. python -c "
                             "'import secrets; print(secrets.token_urlsafe(24))').")


def voila_environment() -> dict[str, str]:
    """This environment with the package's data folder first on JUPYTER_PATH: Voila finds the "workbench" page
    template there (workbench/data/voila/templates/workbench: Voila's lab page without CDN requests)."""
    data = Path(__file__).resolve().parent / "data"
    path = os.pathsep.join(filter(None, [str(data), os.environ.get("JUPYTER_PATH")]))
    return dict(os.environ, PYTHONUNBUFFERED="1", JUPYTER_PATH=path)


def serve(model: str, *, backend: str = "onnxruntime", cache_dir=None, shared_cache=None, host: str = DEFAULT_HOST,
          port: int = DEFAULT_PORT, allow_remote: bool = False, runs: int | None = None,
          threads: int | None = None, token: str | None = None, cull_idle_s: int = DEFAULT_CULL_IDLE_S,
          cull_interval_s: int = DEFAULT_CULL_INTERVAL_S, echo=print) -> int:
    """Serve the explorer with Voila until interrupted; returns Voila's exit code."""
    check_serving_options(port=port, cull_idle_s=cull_idle_s, cull_interval_s=cull_interval_s, token=token)
    require("voila", extra="notebook", purpose="the app mode")
    require("ipywidgets", extra="notebook", purpose="the explorer widget")
    if not is_loopback(host) and not allow_remote:
        raise WorkbenchError(f"Refusing to serve the app on {host}: that exposes it to the network. Pass "
                             "--allow-remote (allow_remote=True) to do so on purpose, or leave --host at 127.0.0.1.")
    if not is_loopback(host):
        echo(f"warning: the app listens on {host}:{port} without a password: anyone who can reach this address can "
             "use it to run models on this machine. Prefer a JupyterHub or an SSH tunnel for untrusted networks.")
    folder = Path(tempfile.mkdtemp(prefix="workbench-app-"))
    try:
        notebook = folder / "TensorRT Workbench.ipynb"
        notebook.write_text(json.dumps(app_notebook(model, backend=backend, cache_dir=cache_dir,
                                                    shared_cache=shared_cache, runs=runs, threads=threads)))
        echo(f"app: serving the explorer at http://{host}:{port}/" + (f"?token={token}" if token else "")
             + " (Ctrl-C to stop)")
        command = voila_command(notebook, host=host, port=port, parent=os.getpid(), allow_remote=allow_remote,
                                token=token, cull_idle_s=cull_idle_s, cull_interval_s=cull_interval_s)
        process = subprocess.Popen(command, cwd=folder, env=voila_environment())
        previous = signal.signal(signal.SIGTERM, _interrupt)  # a terminated app stops its server too
        try:
            return process.wait()
        except KeyboardInterrupt:
            process.terminate()
            try:
                return process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                return process.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt
