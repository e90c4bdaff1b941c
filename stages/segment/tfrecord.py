"""tfrecord (segment): each split's images and index masks to TFRecord shards; the train split
with the augment policy's copies (masks moved in lockstep), in a seeded random order; and a
preview of the copies."""

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from odpipe.core.files import fresh_dir, write_json
from odpipe.core.parallel import Workers, resolve_workers
from odpipe.core.runtime import stage
from odpipe.data.augmentation import Policy
from odpipe.data.records import auto_num_shards, write_serialized
from odpipe.data.splitting import SPLITS
from odpipe.segment.clean import read_rows
from odpipe.segment.records import COUNTS, preview_rows, split_examples
from odpipe.segment.report import mask_grid

log = logging.getLogger(__name__)
PREVIEW_IMAGES = 4


@stage("tfrecord")
def main(cfg: DictConfig) -> None:
    out = fresh_dir(cfg.paths.tfrecord)
    images, masks = Path(cfg.paths.clean_images), Path(cfg.paths.clean_masks)
    policy = Policy.from_config(cfg.augment)
    counts = {}
    with Workers(resolve_workers(cfg.tfrecord.workers, "tfrecord.workers")) as workers:
        for split in SPLITS:
            rows = read_rows(Path(cfg.paths.clean_split) / f"{split}.csv")
            copies = policy.copies if split == "train" else 0
            num_bytes = sum((images / r.image).stat().st_size + (masks / r.mask).stat().st_size for r in rows)
            num_shards = cfg.tfrecord.num_shards or auto_num_shards(num_bytes * (1 + copies))
            order_seed = cfg.tfrecord.seed if split == "train" else None
            examples = split_examples(rows, images, masks, policy=policy, order_seed=order_seed, workers=workers)
            _, count = write_serialized(examples, out, split, num_shards)
            counts[split] = count
            log.info("%s: %d examples from %d images in %d shard(s)", split, count, len(rows), num_shards)
            if split == "train":
                colors = json.loads(Path(cfg.paths.classes).read_text())["colors"]
                shown = preview_rows(rows[:PREVIEW_IMAGES], images, masks, policy)
                mask_grid(shown, colors, columns=1 + policy.copies).save(cfg.paths.augment_preview, quality=90)
    write_json(counts, out / COUNTS)  # examples per split: what an epoch is


if __name__ == "__main__":
    main()
