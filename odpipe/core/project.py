"""Where the real project is, for what must outlive a run (checkpoints, the MLflow store): the
one place that knows how DVC's runs (in place, in a task's folder, queued in a temporary copy)
find it."""

from __future__ import annotations

import os
from pathlib import Path


def project_root(cwd: Path) -> Path:
    """The real project: what must outlive a run (checkpoints, the MLflow store and its
    artifacts) goes there. DVC says where it is in ``DVC_ROOT`` (a queued ``dvc exp run`` runs
    in a temporary copy: the variable names the real one); by hand, it is the folder holding
    ``.dvc/`` at or above ``cwd`` (a task's pipeline folder, segment/, is below it)."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    cwd = cwd.resolve()
    return next((folder for folder in (cwd, *cwd.parents) if (folder / ".dvc").is_dir()), cwd)
