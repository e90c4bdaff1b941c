"""tfrecord: each split's CSV and images to TFRecord shards the OD API reads; the train split
also gets the augment policy's copies, and a preview grid of them."""

import logging
from pathlib import Path

from omegaconf import DictConfig

from odpipe.augmentation import Policy, augment, preview_grid
from odpipe.files import fresh_dir, read_csv
from odpipe.runtime import stage
from odpipe.splitting import SPLITS
from odpipe.tfrecord import group_csv_rows, with_images, write_tfrecords

log = logging.getLogger(__name__)


@stage("tfrecord")
def main(cfg: DictConfig) -> None:
    out = fresh_dir(cfg.paths.tfrecord)
    images = Path(cfg.paths.clean_images)
    policy = Policy.from_config(cfg.augment)
    for split in SPLITS:
        records = group_csv_rows(read_csv(Path(cfg.paths.convert) / f"{split}.csv"))
        examples = with_images(records, images)
        if split == "train":
            examples = augment(examples, policy)
            classes = sorted({text for record in records for text in record.texts})
            preview_grid(list(with_images(records[:16], images)), policy, classes).save(cfg.paths.augment_preview)
        _, count = write_tfrecords(examples, out, split, cfg.tfrecord.num_shards)
        log.info("%s: %d examples from %d images in %d shard(s)", split, count, len(records), cfg.tfrecord.num_shards)


if __name__ == "__main__":
    main()
