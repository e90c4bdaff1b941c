"""tfrecord: each split's CSV and images to TFRecord shards the OD API reads; the train split,
with the augment policy's copies, in a seeded random order; and a preview grid of the copies."""

import logging
from pathlib import Path

from omegaconf import DictConfig

from odpipe.core.files import fresh_dir, iter_csv
from odpipe.core.parallel import Workers, resolve_workers
from odpipe.core.runtime import stage
from odpipe.data.augmentation import Policy
from odpipe.data.records import auto_num_shards, write_serialized
from odpipe.data.splitting import SPLITS
from odpipe.detect.augment import preview_grid, split_examples
from odpipe.detect.records import group_csv_rows

log = logging.getLogger(__name__)


@stage("tfrecord")
def main(cfg: DictConfig) -> None:
    out = fresh_dir(cfg.paths.tfrecord)
    images = Path(cfg.paths.clean_images)
    policy = Policy.from_config(cfg.augment)
    with Workers(resolve_workers(cfg.tfrecord.workers, "tfrecord.workers")) as workers:
        for split in SPLITS:
            records = group_csv_rows(iter_csv(Path(cfg.paths.convert) / f"{split}.csv"))
            copies = policy.copies if split == "train" else 0
            num_bytes = sum((images / r.filename).stat().st_size for r in records) * (1 + copies)
            num_shards = cfg.tfrecord.num_shards or auto_num_shards(num_bytes)
            order_seed = cfg.tfrecord.seed if split == "train" else None
            examples = split_examples(records, images, policy, order_seed, workers)
            _, count = write_serialized(examples, out, split, num_shards)
            log.info("%s: %d examples from %d images in %d shard(s)", split, count, len(records), num_shards)
            if split == "train":
                classes = sorted({text for record in records for text in record.texts})
                preview = preview_grid(records, images, policy, classes)
                preview.save(cfg.paths.augment_preview)


if __name__ == "__main__":
    main()
