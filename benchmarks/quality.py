"""Quality bar: the default pipeline on the built-in data, from scratch, in a clean copy.

Prints the test-split mAP@.5 and mAP@[.5:.95], the wall time of every stage, and whether the
bar is met (mAP@.5 >= 0.7 and mAP@[.5:.95] >= 0.45 with at most 20 minutes of training, val
evaluation included), and which checkpoint was exported (the best on val).
Usage: python benchmarks/quality.py [--keep] [hydra overrides ...]
(--keep leaves the work copy in place to inspect the model and the MLflow run.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from harness.runs import project_copy

from odpipe.core.runtime import load_params
from odpipe.devtools.project import repro_timed

BAR = {"map_50": 0.7, "map": 0.45}
MAX_TRAIN_SECONDS = 20 * 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the work copy in place")
    args, overrides = parser.parse_known_args()
    keep = args.keep
    tmp = Path(tempfile.mkdtemp(prefix="odpipe-quality-"))
    try:
        work = project_copy(tmp / "project", overrides)
        seconds = repro_timed(work)
        metrics = json.loads((work / load_params(work).paths.evaluate_report).read_text())
    finally:
        if keep:
            print(f"work copy kept at {tmp / 'project'}")
        else:
            shutil.rmtree(tmp)
    print("stage wall times:")
    for name, secs in seconds.items():
        print(f"  {name:16s} {secs:8.1f} s")
    print(f"test mAP@.5        {metrics['map_50']:.3f}   (bar {BAR['map_50']})")
    print(f"test mAP@[.5:.95]  {metrics['map']:.3f}   (bar {BAR['map']})")
    print(f"  exported checkpoint: step {metrics['exported_step']}, val mAP {metrics.get('exported_val_map', 0):.3f}")
    breakdown = ("map_75", "map_small", "map_medium", "map_large")
    print("  by IoU and size: " + ", ".join(f"{k} {metrics[k]:.3f}" for k in breakdown))
    print(
        f"  at score threshold {metrics['threshold']:.2f} (best F1 on val): "
        f"precision {metrics['precision']:.3f}, recall {metrics['recall']:.3f}, F1 {metrics['f1']:.3f}"
    )
    passed = all(metrics[k] >= v for k, v in BAR.items()) and seconds["train"] <= MAX_TRAIN_SECONDS
    print("quality bar:", "PASSED" if passed else "NOT MET")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
