"""tfrecord: each split's CSV and images to TFRecord shards the OD API reads."""

import logging
from pathlib import Path

from omegaconf import DictConfig

from odpipe.files import fresh_dir, read_csv
from odpipe.runtime import stage
from odpipe.splitting import SPLITS
from odpipe.tfrecord import group_csv_rows, write_tfrecords

log = logging.getLogger(__name__)


@stage("tfrecord")
def main(cfg: DictConfig) -> None:
    out = fresh_dir(cfg.paths.tfrecord)
    for split in SPLITS:
        records = group_csv_rows(read_csv(Path(cfg.paths.convert) / f"{split}.csv"))
        write_tfrecords(records, Path(cfg.paths.clean_images), out, split, cfg.tfrecord.num_shards)
        log.info("%s: %d images in %d shard(s)", split, len(records), cfg.tfrecord.num_shards)


if __name__ == "__main__":
    main()
