"""What offline augmentation costs the tfrecord stage: each policy in conf/augment against `none`,
measured side by side in one run on the same images (absolute times on a shared machine mislead;
the ratios are the result).

Usage: python benchmarks/augment_speed.py [number of images, default 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from odpipe.core.runtime import compose_config
from odpipe.data.annotations import read_voc, to_csv_rows
from odpipe.data.augmentation import Policy
from odpipe.data.synthetic import SyntheticSpec, generate
from odpipe.detect.augment import augment
from odpipe.detect.label_map import class_ids
from odpipe.detect.records import ImageBoxes, group_csv_rows, with_images, write_tfrecords

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ("none", "light", "default", "heavy", "mosaic")
ROUNDS = 3  # interleaved, best of each kept: the least disturbed measurement


def _records(folder: Path, classes: list[str]) -> list[ImageBoxes]:
    """The generated folder as the tfrecord stage sees it (through convert's CSV rows)."""
    annotations = [read_voc(xml) for xml in sorted(folder.glob("*.xml"))]
    return group_csv_rows(to_csv_rows(annotations, class_ids(classes)))


def main(num_images: int) -> None:
    dataset = compose_config(ROOT, []).dataset
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        generate(SyntheticSpec.from_config({**dataset, "num_images": num_images}), raw)
        records = _records(raw, list(dataset.classes))
        policies = {name: Policy.from_config(compose_config(ROOT, [f"augment={name}"]).augment) for name in POLICIES}
        best: dict[str, float] = {}
        counts: dict[str, int] = {}
        for _ in range(ROUNDS):
            for name, policy in policies.items():
                start = time.perf_counter()
                _, counts[name] = write_tfrecords(
                    augment(with_images(records, raw), policy), Path(tmp) / name, "train", 1
                )
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
    print(f"tfrecord stage, train split of {num_images} built-in images (best of {ROUNDS} interleaved rounds):")
    print(f"  {'policy':8s} {'examples':>9s} {'seconds':>8s} {'x none':>7s} {'ms/copy':>8s}")
    for name in POLICIES:
        copies = counts[name] - num_images
        per_copy = (best[name] - best["none"]) / copies * 1000 if copies else 0.0
        print(f"  {name:8s} {counts[name]:9d} {best[name]:8.2f} {best[name] / best['none']:7.1f} {per_copy:8.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", type=int, nargs="?", default=200, help="built-in images (default 200)")
    main(parser.parse_args().images)
