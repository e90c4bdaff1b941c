"""Segmentation losses: void ignored exactly, per-pixel class weights, means over labelled pixels
only, and the same loss and update with model.fit on one device or two replicas."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from odpipe.data.index_masks import VOID
from odpipe.segment.losses import class_weights, make_loss
from tests.conftest import ROOT


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


def _ce_reference(labels: np.ndarray, logits: np.ndarray, weights: np.ndarray) -> float:
    """Weighted mean of -log p(true class) over the non-void pixels."""
    valid = labels != VOID
    probs = _softmax(logits.astype(np.float64))[valid]
    true = labels[valid].astype(int)
    w = weights[true]
    return float((w * -np.log(probs[np.arange(len(true)), true])).sum() / w.sum())


def _dice_reference(labels: np.ndarray, logits: np.ndarray) -> float:
    """1 - mean over the classes present of 2|P.T| / (|P| + |T|), non-void pixels only."""
    valid = labels != VOID
    probs = _softmax(logits.astype(np.float64))[valid]
    truth = np.eye(logits.shape[-1])[labels[valid].astype(int)]
    present = truth.sum(0) > 0
    dice = 2 * (probs * truth).sum(0) / (probs.sum(0) + truth.sum(0))
    return float(1 - dice[present].mean())


@pytest.fixture
def batch() -> tuple[np.ndarray, np.ndarray]:
    """Two 4x5 masks of 4 classes, class 3 absent, a quarter of the pixels void."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, (2, 4, 5)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.25] = VOID
    logits = rng.normal(0, 2, (2, 4, 5, 4)).astype(np.float32)
    return labels, logits


@pytest.mark.parametrize("kind", ["ce", "dice", "ce+dice"])
def test_all_void_batch_gives_zero_and_finite_gradients(kind: str) -> None:
    labels = np.full((2, 3, 3), VOID, np.uint8)
    logits = tf.Variable(np.random.default_rng(0).normal(0, 50, (2, 3, 3, 4)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = make_loss(kind, np.array([1, 2, 0, 1], np.float32))(labels, logits)
    assert loss.numpy() == 0.0
    gradient = tape.gradient(loss, logits).numpy()
    assert np.isfinite(gradient).all() and not gradient.any()


def test_cross_entropy_equals_the_numpy_reference(batch: tuple[np.ndarray, np.ndarray]) -> None:
    labels, logits = batch
    ones = np.ones(4, np.float32)
    expected = _ce_reference(labels, logits, ones)
    assert make_loss("ce")(labels, logits).numpy() == pytest.approx(expected, rel=1e-5)
    # Labels as (batch, height, width, 1) and as floats mean the same.
    assert make_loss("ce")(labels[..., None].astype(np.float32), logits).numpy() == pytest.approx(expected, rel=1e-5)
    # Void pixels' logits change nothing.
    noisy = np.where((labels == VOID)[..., None], 1e4, logits).astype(np.float32)
    assert make_loss("ce")(labels, noisy).numpy() == pytest.approx(expected, rel=1e-5)
    # The mean is over the labelled pixels, not all pixels.
    unweighted_over_all = expected * (labels != VOID).sum() / labels.size
    assert not np.isclose(make_loss("ce")(labels, logits).numpy(), unweighted_over_all)


def test_class_weights_weight_each_pixel_by_its_class(batch: tuple[np.ndarray, np.ndarray]) -> None:
    labels, logits = batch
    weights = np.array([1.0, 3.0, 0.5, 2.0], np.float32)
    expected = _ce_reference(labels, logits, weights)
    assert not np.isclose(expected, _ce_reference(labels, logits, np.ones(4)))
    assert make_loss("ce", weights)(labels, logits).numpy() == pytest.approx(expected, rel=1e-5)
    # Two pixels, CE a (class 0) and b (class 1), weights 1 and 3: (a + 3b) / 4.
    two_logits = logits[:1, :1, :2]
    a, b = -np.log(_softmax(two_logits[0, 0].astype(np.float64))[[0, 1], [0, 1]])
    two_labels = np.array([[[0, 1]]], np.uint8)
    assert make_loss("ce", weights)(two_labels, two_logits).numpy() == pytest.approx((a + 3 * b) / 4, rel=1e-5)


def test_dice_is_zero_for_a_perfect_prediction_and_matches_numpy(batch: tuple[np.ndarray, np.ndarray]) -> None:
    labels, logits = batch
    perfect = (20 * np.eye(4)[np.where(labels == VOID, 3, labels)]).astype(np.float32)  # void: "wrong" class 3
    assert make_loss("dice")(labels, perfect).numpy() == pytest.approx(0, abs=1e-6)
    assert make_loss("dice")(labels, -perfect).numpy() == pytest.approx(1, abs=1e-6)
    expected = _dice_reference(labels, logits)
    assert make_loss("dice")(labels, logits).numpy() == pytest.approx(expected, rel=1e-5)
    both = make_loss("ce+dice")(labels, logits).numpy()
    assert both == pytest.approx(expected + _ce_reference(labels, logits, np.ones(4)), rel=1e-5)


def test_class_weights_from_pixel_counts() -> None:
    np.testing.assert_allclose(class_weights([900, 100, 0], "none"), [1, 1, 0])
    # 1/sqrt(0.9) and 1/sqrt(0.1), scaled to a mean of 1 over the train pixels.
    np.testing.assert_allclose(class_weights([900, 100, 0], "inverse_sqrt"), [5 / 6, 2.5, 0], rtol=1e-6)
    # Shares 0.6, 0.3, 0.1: median 0.3, so 0.5, 1, 3, scaled by 1 / 0.9.
    np.testing.assert_allclose(class_weights([600, 300, 100], "median_frequency"), [5 / 9, 10 / 9, 10 / 3], rtol=1e-6)
    with pytest.raises(ValueError, match="unknown 'inverse'; the methods are none, inverse_sqrt, median_frequency"):
        class_weights([1, 2], "inverse")
    with pytest.raises(ValueError, match="some above 0"):
        class_weights([0, 0], "none")


def test_wrong_kind_or_weight_count_is_refused(batch: tuple[np.ndarray, np.ndarray]) -> None:
    labels, logits = batch
    with pytest.raises(ValueError, match="unknown 'focal'; the losses are ce, dice, ce\\+dice"):
        make_loss("focal")
    with pytest.raises(ValueError, match="3 class weights for 4 classes"):
        make_loss("ce", np.ones(3, np.float32))(labels, logits)


# One batch of 4 images whose first two (the first replica's) are mostly void: a mean of the
# replicas' means differs from the global mean. model.fit takes one SGD step on it, on one device
# and on two replicas (two logical CPUs, which must be set before TensorFlow starts: hence a process).
FIT_SCRIPT = """
import json
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from odpipe.data.index_masks import VOID
from odpipe.segment.losses import make_loss
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (4, 8, 8, 3)).astype(np.float32)
y = rng.integers(0, 3, (4, 8, 8)).astype(np.uint8)
y[:2, :, 2:] = VOID
weights = np.array([1.0, 2.0, 0.5], np.float32)
init = tf.keras.initializers.RandomNormal(0, 0.01, seed=1)
strategies = {"one": tf.distribute.get_strategy(), "two": tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])}
results = {}
for kind in ["ce", "dice", "ce+dice"]:
    loss = make_loss(kind, weights)
    for name, strategy in strategies.items():
        with strategy.scope():
            conv = tf.keras.layers.Conv2D(3, 1, kernel_initializer=init)
            model = tf.keras.Sequential([tf.keras.Input((None, None, 3)), conv])
            model.compile(optimizer=tf.keras.optimizers.SGD(1.0), loss=make_loss(kind, weights))
        start = model.get_weights()[0].ravel().tolist()
        before = float(loss(y, model(x)))
        halves = [float(loss(y[i : i + 2], model(x[i : i + 2]))) for i in (0, 2)]
        logged = model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), verbose=0).history["loss"][0]
        kernel = model.get_weights()[0].ravel().tolist()
        results[f"{kind}/{name}"] = dict(start=start, before=before, halves=halves, logged=logged, kernel=kernel)
print(json.dumps(results))
"""


def test_model_fit_on_two_replicas_matches_one_device() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", FIT_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for kind in ["ce", "dice", "ce+dice"]:
        one, two = results[f"{kind}/one"], results[f"{kind}/two"]
        assert one["before"] == pytest.approx(two["before"], rel=1e-6)  # same initial weights
        assert np.mean(one["halves"]) != pytest.approx(one["before"], rel=1e-3)  # replicas' means would be wrong
        assert one["logged"] == pytest.approx(one["before"], rel=1e-5)
        assert two["logged"] == pytest.approx(one["before"], rel=1e-5)
        np.testing.assert_allclose(two["kernel"], one["kernel"], rtol=1e-4, atol=1e-6)
        assert not np.allclose(one["kernel"], one["start"], atol=1e-3)  # the step moved the weights
