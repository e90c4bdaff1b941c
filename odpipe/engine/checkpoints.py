"""Checkpoints that outlive a stage run: the work folder training resumes from, the best
checkpoint kept beside it, and the finished model published in one rename.

DVC deletes a stage's outputs before it reruns, so ``train_loop``'s own resume (it restores
step, model and optimizer from the latest checkpoint in ``model_dir``) needs a folder DVC does
not own. It lives under the project root (``DVC_ROOT`` for queued experiments, which run in
temporary copies), or wherever ``ODPIPE_TRAIN_WORK`` says (a folder several machines share: a
training killed on one resumes on another), and is named after a digest of everything that
decides the weights: the same inputs continue where they stopped, anything else starts fresh in
another folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import tensorflow as tf

from odpipe.core.project import project_root

STEP_VARIABLE = "step/.ATTRIBUTES/VARIABLE_VALUE"  # train_loop's Checkpoint(step=global_step, ...)
STATE_FILE = "checkpoint"  # the state file tf.train.latest_checkpoint reads
LOCK_FILE = ".lock"
TRAIN_WORK_ENV = "ODPIPE_TRAIN_WORK"  # a shared folder for the work folders, over paths.train_work


def inputs_digest(parts: Mapping[str, str]) -> str:
    """One digest of named input fingerprints (file digests, seeds), order-independent."""
    digest = hashlib.sha256()
    for name in sorted(parts):
        digest.update(f"{name}\0{parts[name]}\n".encode())
    return digest.hexdigest()


def work_folder(train_work: str | Path, inputs: Mapping[str, str]) -> Path:
    """The work folder of a training of these ``inputs``: under ``ODPIPE_TRAIN_WORK`` when set, else
    under ``train_work`` (``paths.train_work``) at the project root. An environment variable and not
    only the param: where a machine keeps checkpoints changes no output, so it must not rerun train."""
    root = os.environ.get(TRAIN_WORK_ENV) or project_root(Path.cwd()) / train_work
    return Path(root) / inputs_digest(inputs)[:16]


def latest(folder: Path) -> str | None:
    """The newest complete checkpoint's prefix. TF writes the state file only after the
    checkpoint's data, so a save cut short is never pointed at."""
    return tf.train.latest_checkpoint(str(folder)) if folder.is_dir() else None


def checkpoint_step(prefix: str) -> int:
    """The global step a train_loop checkpoint was saved at."""
    return int(tf.train.load_variable(prefix, STEP_VARIABLE))


def copy_checkpoint(prefix: str, folder: Path) -> Path:
    """Copy one checkpoint's files into ``folder`` with a state file pointing at it, so that
    ``tf.train.latest_checkpoint(folder)`` (and the exporter) finds exactly this one."""
    folder.mkdir(parents=True, exist_ok=True)
    source = Path(prefix)
    for part in sorted(source.parent.glob(f"{source.name}.*")):
        shutil.copy2(part, folder / part.name)
    (folder / STATE_FILE).write_text(
        f'model_checkpoint_path: "{source.name}"\nall_model_checkpoint_paths: "{source.name}"\n'
    )
    return folder / source.name


@contextmanager
def publishing(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; it becomes ``final`` in one rename only when
    the block succeeds, so a killed run never leaves a half-written output behind."""
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def empty(folder: Path) -> None:
    """Remove everything in a work folder but its lock (held by the caller): a fresh start."""
    for entry in folder.iterdir():
        if entry.name != LOCK_FILE:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


@contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """Hold the work folder alone: two runs training the same inputs at once (a repeated
    queued experiment) would overwrite each other's checkpoints."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / LOCK_FILE).open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"{folder} is in use by another training of the same inputs; wait for it or stop it"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
