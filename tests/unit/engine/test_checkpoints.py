"""Where training keeps the checkpoints it resumes from."""

from __future__ import annotations

from pathlib import Path

import pytest

from odpipe.engine.checkpoints import TRAIN_WORK_ENV, inputs_digest, work_folder


def test_the_work_folder_is_under_the_project_or_a_shared_folder_named_by_the_inputs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The same inputs give the same folder name wherever it lives, so a training killed on one
    machine resumes on another that sees the same shared folder."""
    monkeypatch.delenv(TRAIN_WORK_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    inputs = {"data": "abc", "seed": "0"}
    local = work_folder(".cache/train", inputs)
    assert local == tmp_path / ".cache" / "train" / inputs_digest(inputs)[:16]
    monkeypatch.setenv(TRAIN_WORK_ENV, str(tmp_path / "nfs"))
    assert work_folder(".cache/train", inputs) == tmp_path / "nfs" / local.name
    assert work_folder(".cache/train", {**inputs, "seed": "1"}).name != local.name
