"""App mode: the explorer as a standalone web page, served by Voila (no code cells, no notebook interface).

`python -m workbench app` writes a one-cell notebook that creates the explorer into a fresh private temporary
folder and serves it with Voila on 127.0.0.1. Another address needs `allow_remote=True` (`--allow-remote`) and
prints a warning: anyone who reaches the page can run models on this machine.
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


def voila_command(notebook: Path, *, host: str, port: int) -> list[str]:
    """The Voila server command line: no browser, no token (loopback), source cells stripped."""
    return [sys.executable, "-m", "voila", str(notebook), "--no-browser", f"--Voila.ip={host}", f"--port={port}",
            "--Voila.port_retries=0", "--strip_sources=True", "--show_tracebacks=False",
            f"--Voila.root_dir={notebook.parent}"]


def serve(model: str, *, backend: str = "onnxruntime", cache_dir=None, shared_cache=None, host: str = DEFAULT_HOST,
          port: int = DEFAULT_PORT, allow_remote: bool = False, runs: int | None = None,
          threads: int | None = None, echo=print) -> int:
    """Serve the explorer with Voila until interrupted; returns Voila's exit code."""
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
        echo(f"app: serving the explorer at http://{host}:{port}/ (Ctrl-C to stop)")
        process = subprocess.Popen(voila_command(notebook, host=host, port=port), cwd=folder,
                                   env=dict(os.environ, PYTHONUNBUFFERED="1"))
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
