"""A team's data and models in shared storage: the session's smoke run, committed and pushed to a
DVC remote (a plain folder, as an NFS mount is; an S3 bucket, moto's server standing for it), then
cloned on "another machine" with an empty cache and pulled: every output of every stage arrives as
it was made, and nothing reruns."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from odpipe.devtools.project import experiments, python_env, run_dvc
from odpipe.devtools.servers import scoring_server
from odpipe.engine.mlflow_runs import DVC_EXP_REF_TAG, DVC_EXP_TAG, TRACKING_URI_ENV
from tests.conftest import team_server
from tests.helpers.s3 import bucket_keys, create_bucket, isolate_aws, moto_server

# Whoever commits in a copy: the machine's git identity may be unset, and must not be needed.
GIT_IDENTITY = ("-c", "user.name=odpipe-test", "-c", "user.email=test@odpipe.invalid", "-c", "commit.gpgsign=false")
BUCKET = "odpipe-team"


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["git", *GIT_IDENTITY, *args], cwd=repo, capture_output=True, text=True)
    if check and proc.returncode:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _commit(repo: Path, message: str) -> None:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)


def _changed(repo: Path) -> dict:
    """Detection's stages DVC would rerun (a bare `dvc status` also lists segment's and classify's
    pipelines, which the smoke run never ran)."""
    return json.loads(run_dvc(repo, "status", "--json", "dvc.yaml").stdout)


def _digests(path: Path) -> dict[str, str] | None:
    """md5 of each file of an output, by path under it ("" for a file output); None if absent."""
    if path.is_file():
        return {"": hashlib.md5(path.read_bytes()).hexdigest()}
    if not path.is_dir():
        return None
    files = (p for p in path.rglob("*") if p.is_file())
    return {p.relative_to(path).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in files}


def _outs(repo: Path) -> list[tuple[str, dict]]:
    """(stage, out) for every output dvc.lock records, cached or kept in git."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return [(name, out) for name, stage in lock["stages"].items() for out in stage.get("outs", [])]


def _kept_in_git(repo: Path) -> set[str]:
    """The outputs of the detection pipeline with `cache: false`: git, not a remote, carries them."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        stages = [s for s in dvc.index.stages if Path(s.dvcfile.path).resolve() == (repo / "dvc.yaml").resolve()]
        return {out.def_path for stage in stages for out in stage.outs if not out.use_cache}


def _link_or_copy(src: str, dst: str) -> None:
    """A DVC cache file is shared by a hard link (DVC never writes one in place: it is read-only),
    copied where the filesystem cannot link."""
    if "/.dvc/cache/" in src:
        try:
            Path(dst).hardlink_to(src)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)


@pytest.fixture(scope="module")
def origin(smoke_project: Path, tmp_path_factory) -> Path:
    """The machine that ran the pipeline: a copy of the session's smoke project as git sees it
    (work tree and history, nothing git ignores) with its DVC cache, and the run's state committed
    (params.yaml, dvc.lock, the reports DVC keeps in git: outputs with `cache: false`). Each test
    adds its remote on top, in a commit of its own, and clones that."""
    assert _changed(smoke_project) == {}, "the smoke project, as the tests before left it, is not up to date"
    listed = _git(smoke_project, "ls-files", "--others", "--ignored", "--exclude-standard", "--directory").stdout
    ignored = {line.rstrip("/") for line in listed.splitlines()} - {".dvc/cache"}

    def skip(folder: str, names: list[str]) -> set[str]:
        here = Path(folder).relative_to(smoke_project)
        return {n for n in names if (here / n).as_posix() in ignored}

    work = tmp_path_factory.mktemp("team") / "origin"
    shutil.copytree(smoke_project, work, ignore=skip, copy_function=_link_or_copy, symlinks=True)
    _commit(work, "smoke run")
    return work


def test_every_output_is_in_git_or_in_the_cache(origin: Path) -> None:
    """What a clone gets: outputs with `cache: false` come through git, which must hold each whole
    (git keeps no empty folder, nor a file it ignores); the others through the remote, from the
    cache."""
    tracked = set(_git(origin, "ls-files", "-z").stdout.split("\0"))
    uncached = _kept_in_git(origin)
    for name, out in _outs(origin):
        if out["path"] not in uncached:
            assert (origin / ".dvc" / "cache" / "files" / "md5" / out["md5"][:2] / out["md5"][2:]).is_file()
        elif out["md5"].endswith(".dir"):
            held = {p for p in tracked if p.startswith(f"{out['path']}/")}
            assert len(held) == out["nfiles"] > 0, (
                f"{name}'s output {out['path']} has `cache: false` and {out['nfiles']} files, git holds"
                f" {len(held)}: a clone lacks it, and DVC reruns {name} there"
            )
        else:
            assert out["path"] in tracked, f"{name}'s output {out['path']} has `cache: false` and is not in git"


def _other_machine(origin: Path, where: Path) -> Path:
    """A clone of ``origin``'s last commit, with a cache of its own, still empty."""
    _git(where.parent, "clone", "-q", str(origin), str(where))
    assert not (where / ".dvc" / "cache").exists()
    return where


def _has_the_run(clone: Path, smoke_project: Path) -> None:
    """Every output of every stage in ``clone`` is as the smoke run made it, DVC finds nothing to
    rerun (and reruns nothing), and pulling changed no file git tracks."""
    assert (clone / "dvc.lock").read_text() == (smoke_project / "dvc.lock").read_text()
    for name, out in _outs(clone):
        got = _digests(clone / out["path"])
        assert got is not None, f"{name}'s output {out['path']} is missing"
        assert got == _digests(smoke_project / out["path"]), f"{name}'s output {out['path']} differs"
        if out["md5"].endswith(".dir"):
            size = sum((clone / out["path"] / p).stat().st_size for p in got)
            assert (len(got), size) == (out["nfiles"], out["size"]), out["path"]
        else:
            assert got[""] == out["md5"], out["path"]
    assert _changed(clone) == {}
    proc = run_dvc(clone, "repro", "dvc.yaml")
    assert not re.findall(r"Running stage '([\w:/.-]+)'", proc.stdout), proc.stdout[-3000:]
    assert "Data and pipelines are up to date." in proc.stdout
    assert _git(clone, "status", "--porcelain").stdout == ""


def test_a_shared_folder_carries_the_run_to_another_machine(origin: Path, smoke_project: Path, tmp_path: Path) -> None:
    """A plain folder as the default remote (an NFS or SMB mount is one): push after the run,
    pull on a fresh clone."""
    remote = tmp_path / "nfs" / "odpipe-dvc"
    run_dvc(origin, "remote", "add", "-d", "shared", str(remote))
    _commit(origin, "the team's shared folder as DVC remote")
    run_dvc(origin, "push", "dvc.yaml", timeout=300)
    assert list((remote / "files" / "md5").iterdir())

    clone = _other_machine(origin, tmp_path / "other")
    run_dvc(clone, "pull", "dvc.yaml", timeout=300)
    _has_the_run(clone, smoke_project)


def test_an_s3_bucket_carries_the_run_and_its_credentials_stay_local(
    origin: Path, smoke_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An S3 bucket as the default remote, its endpoint committed and its credentials only in each
    machine's git-ignored .dvc/config.local: without them a clone can pull nothing (nothing of this
    machine's AWS settings leaks in), with its own it pulls the whole run."""
    isolate_aws(monkeypatch, tmp_path)
    # Made here, not written in this file: the project's copy holds this file, and git tracks it.
    key_id, secret = f"AKIA{secrets.token_hex(8).upper()}", secrets.token_hex(20)
    with moto_server(tmp_path / "moto.log") as endpoint:
        create_bucket(endpoint, BUCKET, key_id, secret)
        run_dvc(origin, "remote", "add", "-d", "s3remote", f"s3://{BUCKET}/odpipe")
        run_dvc(origin, "remote", "modify", "s3remote", "endpointurl", endpoint)
        run_dvc(origin, "remote", "modify", "--local", "s3remote", "access_key_id", key_id)
        run_dvc(origin, "remote", "modify", "--local", "s3remote", "secret_access_key", secret)
        _commit(origin, "the team's bucket as DVC remote")

        config, local = (origin / ".dvc" / "config").read_text(), (origin / ".dvc" / "config.local").read_text()
        assert key_id in local and secret in local
        assert key_id not in config and secret not in config and endpoint in config
        assert ".dvc/config.local" not in _git(origin, "ls-files").stdout.splitlines()
        for where in ((), ("HEAD",)):  # the files git tracks, as they are and as committed
            found = _git(origin, "grep", "-l", "-F", "-e", key_id, "-e", secret, *where, check=False)
            assert found.returncode == 1 and not found.stdout, f"credentials in git: {found.stdout}"

        run_dvc(origin, "push", "dvc.yaml", timeout=300)
        keys = bucket_keys(endpoint, BUCKET, key_id, secret)
        assert keys and all(k.startswith("odpipe/files/md5/") for k in keys), keys[:5]

        clone = _other_machine(origin, tmp_path / "other")
        assert not (clone / ".dvc" / "config.local").exists()
        with pytest.raises(RuntimeError, match="Unable to locate credentials"):
            run_dvc(clone, "pull", "dvc.yaml", timeout=300)
        run_dvc(clone, "remote", "modify", "--local", "s3remote", "access_key_id", key_id)
        run_dvc(clone, "remote", "modify", "--local", "s3remote", "secret_access_key", secret)
        run_dvc(clone, "pull", "dvc.yaml", timeout=300)
        _has_the_run(clone, smoke_project)


def _exp_run(clone: Path, name: str, setting: str) -> subprocess.Popen:
    """`dvc exp run` of one experiment, started in the background, with a gate every model passes.
    Settings go into params.yaml as it stands (--no-hydra): composing conf anew would need every
    override the tests before made to the smoke project."""
    command = ["dvc", "exp", "run", "--no-hydra", "-n", name, "-S", setting, "-S", "evaluate.min_map=0.0"]
    return subprocess.Popen(
        command, cwd=clone, env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_two_machines_run_one_sweep_and_a_third_compares_both(
    origin: Path, smoke_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two clones stand for two machines, each running one experiment of the same sweep at the same
    time (over evaluate's settings, so that only evaluate reruns: the model is the pulled one) with
    one Git remote, one DVC remote and one MLflow server on PostgreSQL. Each pushes its experiment;
    a third clone pulls both and `dvc exp show` lists them with their metrics, each naming its MLflow
    run, which names its experiment back; both models are registered (two versions at once, no
    error) and a registered version is served through the server, as a colleague would."""
    git_remote = tmp_path / "odpipe.git"
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", str(git_remote))
    run_dvc(origin, "remote", "add", "-d", "team", str(tmp_path / "dvc-remote"))
    _commit(origin, "the team's DVC remote")
    run_dvc(origin, "push", "dvc.yaml", timeout=300)
    _git(origin, "push", "-q", str(git_remote), "HEAD:refs/heads/main")
    sweep = {"a": "0.3", "b": "0.6"}  # machine: evaluate.score_threshold

    with team_server(tmp_path) as server:
        monkeypatch.setenv(TRACKING_URI_ENV, server)
        machines = {m: _other_machine(git_remote, tmp_path / m) for m in sweep}
        for clone in machines.values():
            run_dvc(clone, "pull", "dvc.yaml", timeout=300)
        runs = {m: _exp_run(machines[m], f"threshold-{t}", f"evaluate.score_threshold={t}") for m, t in sweep.items()}
        for machine, proc in runs.items():
            output = proc.communicate(timeout=900)[0]
            assert proc.returncode == 0, output[-3000:]
            assert set(re.findall(r"Running stage '([\w:/.-]+)'", output)) == {"evaluate"}, output[-3000:]
            run_dvc(machines[machine], "exp", "push", "origin", f"threshold-{sweep[machine]}", timeout=300)

        third = _other_machine(git_remote, tmp_path / "c")
        for threshold in sweep.values():
            run_dvc(third, "exp", "pull", "origin", f"threshold-{threshold}", timeout=300)
        shown = experiments(third)
        client = MlflowClient(server)
        versions = client.search_model_versions("name='odpipe-detector'")
        assert sorted(int(v.version) for v in versions) == [1, 2]  # one each, registered at the same time
        for threshold in sweep.values():
            name = f"threshold-{threshold}"
            assert shown[name]["params"]["evaluate"]["score_threshold"] == float(threshold)
            metrics = shown[name]["metrics"]["reports/evaluate.json"]
            run = client.get_run(metrics["mlflow_run_id"])
            assert run.info.status == "FINISHED" and run.data.metrics["map"] == pytest.approx(metrics["map"])
            assert run.data.tags[DVC_EXP_TAG] == name and run.data.tags[DVC_EXP_REF_TAG].endswith(f"/{name}")
            assert run.info.run_id in {v.run_id for v in versions}
            assert "evaluate.json" in {f.path for f in client.list_artifacts(run.info.run_id)}

        # Its commit as a branch, then its files (`dvc exp apply` would also check out the pipelines
        # this project never ran, and fail on them)
        run_dvc(third, "exp", "branch", "threshold-0.6", "threshold-0.6")
        _git(third, "checkout", "-q", "threshold-0.6")
        run_dvc(third, "pull", "dvc.yaml", timeout=300)
        assert _changed(third) == {}
        with scoring_server("models:/odpipe-detector/2", server, tmp_path) as url:
            image = next((third / "data" / "clean_split").rglob("*.jpg")).read_bytes()
            body = json.dumps({"dataframe_records": [{"image": base64.b64encode(image).decode()}]}).encode()
            request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=120) as response:
                assert response.status == 200 and "predictions" in json.loads(response.read())
