"""Local servers odpipe starts (tests and benchmarks): a free port on 127.0.0.1, waiting until a
server answers, and MLflow's scoring server for a registered model, always stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from odpipe.engine.mlflow_runs import TRACKING_URI_ENV


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (just now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_http(url: str, server: subprocess.Popen, seconds: float, log: Path | None = None) -> None:
    """Block until ``url`` answers; fail, with the server's log, if it dies or is not up in time."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                said = log.read_text()[-5000:] if log else ""
                raise RuntimeError(f"the server for {url} did not start\n{said}") from None
            time.sleep(1)


@contextmanager
def scoring_server(model_uri: str, tracking_uri: str, work: Path, seconds: float = 300) -> Iterator[str]:
    """``mlflow models serve`` of ``model_uri`` (``models:/<name>/<version>``) from this
    environment, one worker, on a free port; yields its URL once ``/ping`` answers. It runs in a
    process group of its own, stopped as a whole (the CLI and the uvicorn it starts) whatever
    happens; its output goes to ``work/server.log``."""
    port, log_path = free_port(), work / "server.log"
    env = {
        **os.environ,
        TRACKING_URI_ENV: tracking_uri,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
    command += ["--host", "127.0.0.1", "-p", str(port), "-w", "1"]
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_for_http(f"{url}/ping", proc, seconds, log_path)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
