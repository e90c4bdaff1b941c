"""convert: cleaned annotations of each split to one CSV per split, plus label_map.pbtxt.
Crowd regions stay out of train's CSV (nothing learns from them) and in val's and test's,
flagged ``iscrowd``, for evaluation to ignore."""

from pathlib import Path

from omegaconf import DictConfig

from odpipe.core.files import fresh_dir, read_json, read_jsonl, write_csv
from odpipe.core.runtime import stage
from odpipe.data.annotations import CSV_COLUMNS, annotation_from_dict, to_csv_rows, trainable
from odpipe.data.splitting import SPLITS
from odpipe.detect.label_map import class_ids, write_label_map


@stage("convert")
def main(cfg: DictConfig) -> None:
    classes = read_json(cfg.paths.classes)["names"]  # as clean_split settled them
    out = fresh_dir(cfg.paths.convert)
    ids = class_ids(classes)
    for split in SPLITS:
        annotations = (annotation_from_dict(row) for row in read_jsonl(Path(cfg.paths.clean_split) / f"{split}.jsonl"))
        if split == "train":
            annotations = (trainable(a) for a in annotations)
        write_csv(to_csv_rows(annotations, ids), CSV_COLUMNS, out / f"{split}.csv")
    write_label_map(classes, Path(cfg.paths.label_map))


if __name__ == "__main__":
    main()
