"""tfrecord (classify): each split's images and class ids to TFRecord shards; the train split with
the augment policy's copies, in a seeded random order; and a preview of the copies."""

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from odpipe.classify.clean import read_rows
from odpipe.classify.records import COUNTS, preview_images, split_examples
from odpipe.classify.report import captioned_grid
from odpipe.core.files import fresh_dir, write_json
from odpipe.core.parallel import Workers, resolve_workers
from odpipe.core.runtime import stage
from odpipe.data.augmentation import Policy
from odpipe.data.records import auto_num_shards, write_serialized
from odpipe.data.splitting import SPLITS

log = logging.getLogger(__name__)
PREVIEW_IMAGES = 4


@stage("tfrecord")
def main(cfg: DictConfig) -> None:
    out = fresh_dir(cfg.paths.tfrecord)
    images = Path(cfg.paths.clean_images)
    names = json.loads(Path(cfg.paths.classes).read_text())["names"]
    policy = Policy.from_config(cfg.augment)
    counts = {}
    with Workers(resolve_workers(cfg.tfrecord.workers, "tfrecord.workers")) as workers:
        for split in SPLITS:
            rows = read_rows(Path(cfg.paths.clean_split) / f"{split}.csv")
            copies = policy.copies if split == "train" else 0
            num_bytes = sum((images / r.image).stat().st_size for r in rows)
            num_shards = cfg.tfrecord.num_shards or auto_num_shards(num_bytes * (1 + copies))
            order_seed = cfg.tfrecord.seed if split == "train" else None
            examples = split_examples(rows, images, names=names, policy=policy, order_seed=order_seed, workers=workers)
            _, counts[split] = write_serialized(examples, out, split, num_shards)
            log.info("%s: %d examples from %d images in %d shard(s)", split, counts[split], len(rows), num_shards)
            if split == "train":
                shown = rows[:PREVIEW_IMAGES]
                captions = [
                    f"{names[r.label]}{f' #aug{c}' if c else ''}" for r in shown for c in range(1 + policy.copies)
                ]
                pictures = preview_images(shown, images, policy)
                grid = captioned_grid(list(zip(pictures, captions, strict=True)), columns=1 + policy.copies)
                grid.save(cfg.paths.augment_preview, quality=90)
    write_json(counts, out / COUNTS)  # examples per split: what an epoch is


if __name__ == "__main__":
    main()
