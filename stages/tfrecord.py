"""tfrecord: each split's CSV and images to TFRecord shards the OD API reads; the train split,
with the augment policy's copies, in a seeded random order; and a preview grid of the copies."""

import logging
from pathlib import Path

from omegaconf import DictConfig

from odpipe.augmentation import Policy, preview_grid, training_examples
from odpipe.files import fresh_dir, read_csv
from odpipe.runtime import stage
from odpipe.splitting import SPLITS
from odpipe.tfrecord import auto_num_shards, group_csv_rows, with_images, write_tfrecords

log = logging.getLogger(__name__)


@stage("tfrecord")
def main(cfg: DictConfig) -> None:
    out = fresh_dir(cfg.paths.tfrecord)
    images = Path(cfg.paths.clean_images)
    policy = Policy.from_config(cfg.augment)
    for split in SPLITS:
        records = group_csv_rows(read_csv(Path(cfg.paths.convert) / f"{split}.csv"))
        num_bytes = sum((images / r.filename).stat().st_size for r in records) * (
            1 + (split == "train") * policy.copies
        )
        num_shards = cfg.tfrecord.num_shards or auto_num_shards(num_bytes)
        if split == "train":
            examples = training_examples(records, images, policy, cfg.tfrecord.seed)
            classes = sorted({text for record in records for text in record.texts})
            preview_grid(list(with_images(records[:16], images)), policy, classes).save(cfg.paths.augment_preview)
        else:
            examples = with_images(records, images)
        _, count = write_tfrecords(examples, out, split, num_shards)
        log.info("%s: %d examples from %d images in %d shard(s)", split, count, len(records), num_shards)


if __name__ == "__main__":
    main()
