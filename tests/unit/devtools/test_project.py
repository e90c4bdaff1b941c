"""Clean copies of the project for tests and benchmarks: the code whole, no run's products."""

from __future__ import annotations

from pathlib import Path

from odpipe.devtools.project import copy_project


def test_a_copy_leaves_out_run_products_in_pipeline_folders_only(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = [
        "dvc.yaml", "odpipe/data/records.py", "tests/data/x.pkl", "segment/dvc.yaml",  # code: copied
        "data/raw/a.jpg", "models/export/m", "segment/data/tfrecord/t", "classify/reports/r.json",  # run products
        "mlflow.db", ".cache/train/ckpt", "odpipe/core/__pycache__/x.pyc", ".dvc/cache/ab", ".dvc/config",
    ]  # fmt: skip
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(name)
    copied = copy_project(src, tmp_path / "dst")
    kept = {p.relative_to(copied).as_posix() for p in copied.rglob("*") if p.is_file()}
    assert kept == {"dvc.yaml", "odpipe/data/records.py", "tests/data/x.pkl", "segment/dvc.yaml", ".dvc/config"}
