"""The classify task's records, training phases, class weights and export, on tiny real models."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from object_detection.core import standard_fields as fields
from object_detection.data_decoders import tf_example_decoder
from PIL import Image
from sklearn.utils.class_weight import compute_class_weight

from odpipe.classify.clean import ClassRow
from odpipe.classify.evaluate import across_classes
from odpipe.classify.export import decode_resized, export_classifier, load_classifier
from odpipe.classify.models import build_model, freeze_epochs
from odpipe.classify.records import parse_example, split_examples
from odpipe.classify.train import (
    class_weights,
    compiled_model,
    phases,
    predict_split,
    split_batches,
    train_dataset,
    val_scores,
)
from odpipe.core.parallel import Workers
from odpipe.data.augmentation import Policy
from odpipe.data.records import write_serialized
from odpipe.engine.journal import Journal
from odpipe.engine.keras_loop import EpochSchedule, fit_epochs

NAMES = ["circle", "square", "star"]
POLICY = Policy(copies=1, transforms=({"name": "HorizontalFlip", "p": 1.0},), seed=3)


def _jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="JPEG", quality=95)
    return out.getvalue()


@pytest.fixture
def records(tmp_path: Path) -> Path:
    """Train and val shards of 6 one-colour images, a class each colour."""
    images, out = tmp_path / "images", tmp_path / "records"
    images.mkdir()
    rows = []
    for i in range(6):
        label = i % 3
        (images / f"{i}.jpg").write_bytes(_jpeg(((80 * label) % 256, 200 - 60 * label, 40 + i)))
        rows.append(ClassRow(f"{i}.jpg", label, 40, 30))
    with Workers(1) as workers:
        for split, seed in (("train", 0), ("val", None)):
            write_serialized(
                split_examples(rows, images, names=NAMES, policy=POLICY, order_seed=seed, workers=workers),
                out,
                split,
                2,
            )
    return out


def test_balanced_class_weights_are_scikit_learns_and_an_absent_class_weighs_nothing() -> None:
    counts = [30, 10, 5, 0]
    labels = np.repeat(np.arange(4), counts)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    weights = class_weights(counts, "balanced")
    # scikit-learn counts the classes present; ours all of them, so the scales differ by 3/4
    np.testing.assert_allclose(weights[:3], expected * 3 / 4, rtol=1e-6)
    assert weights[3] == 0 and list(class_weights(counts, "none")) == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="train.class_weights"):
        class_weights(counts, "inverse")


def test_records_hold_the_class_for_the_od_apis_decoder_and_copies_are_worker_independent(
    records: Path, tmp_path: Path
) -> None:
    decoder = tf_example_decoder.TfExampleDecoder()
    seen = []
    for path in sorted(records.glob("train-*")):
        for serialized in tf.data.TFRecordDataset(str(path)):
            decoded = decoder.decode(serialized)
            encoded, label = parse_example(serialized)
            assert int(decoded[fields.InputDataFields.groundtruth_image_classes].numpy()[0]) == int(label)
            assert tf.io.decode_image(encoded, channels=3).shape == (30, 40, 3)
            seen.append((decoded[fields.InputDataFields.filename].numpy().decode(), int(label)))
    assert len(seen) == 12 and sum("#aug1" in name for name, _ in seen) == 6
    assert all(int(Path(name.split("#")[0]).stem) % 3 == label for name, label in seen)
    rows = [ClassRow(f"{i}.jpg", i % 3, 40, 30) for i in range(6)]
    written = []
    for count in (1, 2):
        with Workers(count) as workers:
            serialized = split_examples(
                rows, records.parent / "images", names=NAMES, policy=POLICY, order_seed=0, workers=workers
            )
            paths, _ = write_serialized(serialized, tmp_path / f"w{count}", "train", 2)
        written.append([p.read_bytes() for p in paths])
    assert written[0] == written[1]


def test_a_pretrained_backbone_trains_frozen_then_fine_tuned_with_its_batchnorm_kept(
    records: Path, tmp_path: Path
) -> None:
    """Backbone weights from a file (what `weights: imagenet` downloads): epoch 1 trains the head
    alone, epoch 2 the backbone too; BatchNorm statistics never move."""
    weights = tmp_path / "backbone.h5"
    tf.keras.applications.MobileNetV2(
        include_top=False, weights=None, alpha=0.35, input_shape=(32, 32, 3)
    ).save_weights(str(weights))
    model_cfg = {"task": "classify", "architecture": "mobilenetv2", "weights": str(weights), "alpha": 0.35}
    model_cfg |= {"dropout": 0.0, "freeze_epochs": 1}
    assert freeze_epochs(model_cfg) == 1 and freeze_epochs(model_cfg | {"weights": None}) == 0
    train = {"learning_rate": 0.01, "label_smoothing": 0.1, "mixed_precision": False}
    tf.keras.utils.set_random_seed(0)
    model = compiled_model(model_cfg, len(NAMES), 32, train, total_steps=8)
    conv, bn = model.get_layer("Conv1"), model.get_layer("bn_Conv1")
    after: dict[int, tuple[np.ndarray, ...]] = {}

    def snapshot() -> tuple[np.ndarray, ...]:
        return (
            conv.kernel.numpy().copy(),
            bn.moving_mean.numpy().copy(),
            model.get_layer("logits").kernel.numpy().copy(),
        )

    def on_val(epoch: int, metrics: dict[str, float]) -> None:
        after[epoch] = snapshot()

    start = snapshot()
    data = train_dataset(
        records,
        batch_size=4,
        image_size=32,
        num_classes=len(NAMES),
        weights=class_weights([2, 2, 2], "none"),
        seed=0,
    )
    val = split_batches(records, "val", 32, 4)
    journal = Journal.open(tmp_path / "work", 0, select="val/top1")
    schedule = EpochSchedule(epochs=2, steps_per_epoch=4)
    prepare = phases(model, model_cfg, schedule.epochs, train["label_smoothing"])
    outcome = fit_epochs(
        model,
        data,
        lambda: val_scores(*predict_split(model, val), NAMES),
        tmp_path / "work",
        schedule,
        journal,
        batch_size=4,
        on_losses=lambda epoch, losses: None,
        on_val=on_val,
        prepare=prepare,
    )
    assert outcome.last_step == 2
    np.testing.assert_array_equal(after[1][0], start[0])  # frozen backbone
    assert not np.array_equal(after[1][2], start[2])  # the head learnt
    assert not np.array_equal(after[2][0], after[1][0])  # fine-tuned
    np.testing.assert_array_equal(after[2][1], start[1])  # BatchNorm kept


def test_the_export_decodes_and_resizes_as_training_did(tmp_path: Path) -> None:
    model = build_model("course_cnn", len(NAMES), 32, {"filters": [4, 8], "dense_units": 8, "dropout": 0.0})
    export_classifier(model, tmp_path / "export", 32, NAMES)
    classifier = load_classifier(tmp_path / "export")
    assert classifier.names == NAMES and classifier.image_size == 32
    assert json.loads((tmp_path / "export" / "classes.json").read_text())["names"] == NAMES
    encoded = [_jpeg((200, 30, 30), (50, 20)), _jpeg((10, 90, 250), (16, 16))]
    served = classifier.predict(encoded)
    direct = model(tf.stack([decode_resized(tf.constant(e), 32) for e in encoded]), training=False).numpy()
    np.testing.assert_allclose(served, direct, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served.sum(-1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="3 classes, given 2 names"):
        export_classifier(model, tmp_path / "other", 32, NAMES[:2])


def test_examples_for_the_report_take_each_class_in_turn() -> None:
    rows = [ClassRow(f"{n}.jpg", label, 8, 8) for n, label in enumerate([0, 0, 0, 1, 2, 2])]
    assert [r.image for r in across_classes(rows, 5)] == ["0.jpg", "3.jpg", "4.jpg", "1.jpg", "5.jpg"]
    assert across_classes(rows, 0) == [] and across_classes([], 3) == []
