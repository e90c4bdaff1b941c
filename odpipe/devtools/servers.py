"""Local servers odpipe starts (tests and benchmarks): a free port on 127.0.0.1, waiting until a
server answers, MLflow's scoring server for a registered model, a throwaway PostgreSQL cluster and
an MLflow tracking server on it (a team's set-up, docs/team.md), always stopped.

Each server runs in a process group of its own, stopped as a whole (a CLI and the workers it
starts) whatever happens, its output in a log file of the work folder that a failed start shows.
"""

from __future__ import annotations

import getpass
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from odpipe.devtools.project import python_env
from odpipe.engine.mlflow_runs import TRACKING_URI_ENV

POSTGRES_HINT = (
    "install the OS package `postgresql` (Debian/Ubuntu: apt-get install postgresql; "
    "macOS: brew install postgresql@15), or see docs/team.md"
)
POSTGRES_USERS = ("postgres", "nobody")  # whom PostgreSQL runs as when we are root (it refuses root)
# MLflow 3's server also starts a job runner by default: 7 more processes (huey consumers, each
# importing MLflow: about 1.6 GB together, and most of a start-up on 2 cores) for GenAI jobs
# (LLM judges, prompt optimisation, trace roll-ups) that odpipe never submits.
JOBS_ENV = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
GO_ENV = "ODPIPE_GO_FILE"  # the file whose appearance releases the clients of run_together


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


def start_group(command: list[str], work: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """``command`` in a new process group (session), run in ``work``, its output appended to
    ``log_path``."""
    with log_path.open("a") as log:
        return subprocess.Popen(
            command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_group(proc: subprocess.Popen, seconds: float = 30) -> None:
    """SIGTERM to ``proc``'s whole process group, SIGKILL if it is not gone in ``seconds``."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    try:  # workers that outlived the leader
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def scoring_server(model_uri: str, tracking_uri: str, work: Path, seconds: float = 300) -> Iterator[str]:
    """``mlflow models serve`` of ``model_uri`` (``models:/<name>/<version>``) from this
    environment, one worker, on a free port; yields its URL once ``/ping`` answers. Its output
    goes to ``work/server.log``."""
    port, log_path = free_port(), work / "server.log"
    log_path.write_text("")
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
    command += ["--host", "127.0.0.1", "-p", str(port), "-w", "1"]
    url = f"http://127.0.0.1:{port}"
    proc = start_group(command, work, python_env(**{TRACKING_URI_ENV: tracking_uri}), log_path)
    try:
        wait_for_http(f"{url}/ping", proc, seconds, log_path)
        yield url
    finally:
        stop_group(proc)


def postgres_bin() -> Path:
    """The folder of PostgreSQL's server programs (``initdb``, ``pg_ctl``, ``createdb``): where
    PATH finds ``initdb``, else Debian's ``/usr/lib/postgresql/<version>/bin`` (the newest),
    which the ``postgresql`` package does not put on PATH."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    versions.sort(key=lambda b: [int(n) for n in re.findall(r"\d+", b.parent.name)])
    if not versions:
        raise RuntimeError(f"PostgreSQL's initdb was not found (tests and benchmarks need it): {POSTGRES_HINT}")
    return versions[-1]


def postgres_user() -> tuple[list[str], str]:
    """The command prefix that runs PostgreSQL's programs, and the OS user (the cluster's
    superuser role) they run as: PostgreSQL refuses to run as root, so as root they run as
    ``postgres`` (or ``nobody``); otherwise as ourselves, with no prefix."""
    if os.geteuid() != 0:
        return [], getpass.getuser()
    for user in POSTGRES_USERS:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return ["runuser", "-u", user, "--"], user
        return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups"], user
    raise RuntimeError(f"running as root, and none of the users {POSTGRES_USERS} exists to run PostgreSQL as")


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-5000:] if path.exists() else ""


@contextmanager
def postgres_cluster(work: Path, database: str = "mlflow") -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (trust authentication, loopback only, its unix
    socket inside its own folder) on a free port, with an empty database ``database``; yields
    its SQLAlchemy URL ``postgresql+psycopg2://<user>@127.0.0.1:<port>/<database>`` (the driver
    named: SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3, and the ``server`` extra
    installs psycopg2). The cluster lives in a fresh temporary folder (mode 755: as root, the
    user PostgreSQL runs as must reach it, and pytest's folders are mode 700), removed with it;
    the server is stopped (``pg_ctl stop -m fast``) whatever happens. Its output goes to
    ``work/postgres.log``."""
    bin_dir = postgres_bin()
    prefix, user = postgres_user()
    base = Path(tempfile.mkdtemp(prefix="odpipe-pg-"))
    data, port, log_path = base / "data", free_port(), work / "postgres.log"
    base.chmod(0o755)
    if prefix:
        shutil.chown(base, user)

    def pg(program: str, *args: str) -> None:
        # The log is opened here, as us: the server pg_ctl starts inherits it as its output.
        with log_path.open("a") as log:
            subprocess.run(
                [*prefix, str(bin_dir / program), *args], cwd=base, stdout=log, stderr=subprocess.STDOUT, check=True
            )

    log_path.write_text("")
    try:
        try:
            pg("initdb", "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
            with (data / "postgresql.conf").open("a") as conf:
                conf.write(f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{data}'\n")
            pg("pg_ctl", "-D", str(data), "-w", "-t", "120", "start")
            pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", user, database)
        except (subprocess.CalledProcessError, OSError) as error:
            raise RuntimeError(f"PostgreSQL did not start ({error}); {log_path}:\n{_log_tail(log_path)}") from None
        yield f"postgresql+psycopg2://{user}@127.0.0.1:{port}/{database}"
    finally:
        _stop_postgres(prefix, bin_dir, data, log_path)
        shutil.rmtree(base, ignore_errors=True)


def _stop_postgres(prefix: list[str], bin_dir: Path, data: Path, log_path: Path) -> None:
    """``pg_ctl stop -m fast``; if the server is still there after it, SIGKILL to its postmaster
    (which takes its children down)."""
    pid_file = data / "postmaster.pid"
    if not pid_file.exists():
        return
    with log_path.open("a") as log:
        stopped = subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop"],
            cwd=data.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if stopped.returncode and pid_file.exists():
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        except (ProcessLookupError, ValueError, IndexError):
            pass


class TrackingServer:
    """``mlflow server`` on the database store ``db`` (a SQLAlchemy URL), as a team runs it
    (docs/team.md): the schema brought up to date first (``mlflow db upgrade``: it creates the
    tables of a fresh database, and after an MLflow upgrade the server refuses a store whose
    schema is behind until it is run), artifacts
    proxied by the server (stored under ``artifacts``, a folder or an ``s3://`` URI, and
    uploaded and downloaded through the server, so clients need no storage credentials), on
    127.0.0.1 at a free port kept across restarts. Its output goes to ``work/mlflow-server.log``.

    ``with TrackingServer(...) as server:`` upgrades and starts it, ``server.url`` is its URL;
    ``stop()`` and ``start()`` restart it on the same port, store and artifacts. ``jobs``: also
    MLflow's GenAI job runner (see ``JOBS_ENV``), off as ``make mlflow-server`` leaves it."""

    def __init__(
        self, db: str, artifacts: Path | str, work: Path, workers: int = 2, seconds: float = 120, jobs: bool = False
    ) -> None:
        self.db, self.artifacts, self.work = db, str(artifacts), work
        self.workers, self.seconds, self.jobs = workers, seconds, jobs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work / "mlflow-server.log"
        self.proc: subprocess.Popen | None = None

    def upgrade(self) -> None:
        """``mlflow db upgrade``: the tables created, or migrated to this MLflow's schema."""
        with self.log_path.open("a") as log:
            done = subprocess.run(
                [sys.executable, "-m", "mlflow", "db", "upgrade", self.db],
                cwd=self.work,
                env=python_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if done.returncode:
            raise RuntimeError(f"mlflow db upgrade failed; {self.log_path}:\n{_log_tail(self.log_path)}")

    def start(self) -> str:
        """Start the server (stopped first if it runs); its URL once ``/health`` answers."""
        self.stop()
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.db]
        command += ["--artifacts-destination", self.artifacts, "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--workers", str(self.workers)]
        env = python_env(**{JOBS_ENV: str(self.jobs).lower()})
        self.proc = start_group(command, self.work, env, self.log_path)
        try:
            wait_for_http(f"{self.url}/health", self.proc, self.seconds, self.log_path)
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
            self.proc = None

    def __enter__(self) -> TrackingServer:
        self.log_path.write_text("")
        self.upgrade()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for_go() -> None:
    """In a client started by :func:`run_together`, once set up (imports done, client made):
    say so, then block until every client is, so that their work starts at once."""
    go = Path(os.environ[GO_ENV])
    go.with_name(f"{go.name}.ready-{os.getpid()}").touch()
    while not go.exists():
        time.sleep(0.005)


def run_together(commands: list[list[str]], work: Path, seconds: float = 300) -> list[str]:
    """Run ``commands`` as processes at once, in ``work``: each calls :func:`wait_for_go` once
    set up, and all are released together when the last is ready, so that what they do (log
    to a server, register versions) really overlaps. Returns their outputs (stdout and stderr,
    each in ``work/client-<i>.log``); fails, with the output of the first that failed, if one
    exits non-zero or they are not done in ``seconds``."""
    go = work / "go"
    go.unlink(missing_ok=True)
    for stale in work.glob("go.ready-*"):
        stale.unlink()
    logs = [work / f"client-{i}.log" for i in range(len(commands))]
    for log in logs:
        log.write_text("")
    procs = [start_group(c, work, python_env(**{GO_ENV: str(go)}), log) for c, log in zip(commands, logs, strict=True)]
    try:
        deadline = time.monotonic() + seconds
        while len(list(work.glob("go.ready-*"))) < len(procs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                break
            time.sleep(0.01)
        go.touch()
        for proc in procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        pass  # stopped below, and reported as failed
    finally:
        for proc in procs:
            stop_group(proc, seconds=5)
    for proc, log in zip(procs, logs, strict=True):
        if proc.returncode:
            raise RuntimeError(f"{' '.join(proc.args)} failed ({proc.returncode}):\n{_log_tail(log)}")
    return [log.read_text(errors="replace") for log in logs]
