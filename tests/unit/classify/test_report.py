from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from odpipe.classify.gradcam import grad_cam
from odpipe.classify.metrics import classification_metrics
from odpipe.classify.report import (
    ACCURACY_COLOUR,
    captioned_grid,
    gradcam_figure,
    mistakes_gallery,
    prediction_caption,
    reliability_diagram,
)
from odpipe.core.draw import GAP, LINE

HEIGHT, WIDTH = 8, 12  # the test images; the heat maps are half that, after 2x2 max pooling
# Logits from the two feature channels (rows) for three classes (columns): class 0 is the right
# half's evidence, class 1 the left half's less the right's, class 2 nothing at all. Class 2's
# probability still falls as class 1's evidence (more than class 0's) rises: a map of the softmax
# output rather than of the logit would find "evidence" for class 2 on the right half.
LOGIT_WEIGHTS = np.array([[0.0, 3.0, 0.0], [1.0, -1.0, 0.0]], np.float32)


def _halves() -> np.ndarray:
    """One image: channel 0 lit on the left half, channel 1 on the right, channel 2 noise that
    the model ignores."""
    image = np.zeros((1, HEIGHT, WIDTH, 3), np.float32)
    image[0, :, : WIDTH // 2, 0] = 1
    image[0, :, WIDTH // 2 :, 1] = 1
    image[0, :, :, 2] = np.random.default_rng(0).random((HEIGHT, WIDTH))
    return image


def _feature_layers(x: tf.Tensor) -> tf.Tensor:
    """A 1x1 convolution passing channels 0 and 1 through (weights set after the build) and 2x2
    max pooling, so that the last map is smaller than the image."""
    x = tf.keras.layers.Conv2D(2, 1, use_bias=False, name="features")(x)
    return tf.keras.layers.MaxPooling2D(2, name="pooled")(x)


def _classifier(nesting: str) -> tf.keras.Model:
    """Features -> global average pooling -> Dense "logits" -> softmax, as the classifiers built
    for training end; the features in the model's own graph ("flat"), in a sub-model whose output
    is their map ("map"), or in a sub-model that pools them itself ("pooled")."""
    pixels = tf.keras.Input((HEIGHT, WIDTH, 3), name="pixels")
    pool = tf.keras.layers.GlobalAveragePooling2D
    if nesting == "flat":
        x = pool()(_feature_layers(pixels))
    else:
        inner_in = tf.keras.Input((HEIGHT, WIDTH, 3))
        inner_out = _feature_layers(inner_in) if nesting == "map" else pool()(_feature_layers(inner_in))
        backbone = tf.keras.Model(inner_in, inner_out, name="backbone")
        x = backbone(tf.keras.layers.Rescaling(1.0)(pixels))
        x = x if nesting == "pooled" else pool()(x)
    logits = tf.keras.layers.Dense(3, name="logits")(x)
    model = tf.keras.Model(pixels, tf.keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits))
    holder = model if nesting == "flat" else model.get_layer("backbone")
    holder.get_layer("features").set_weights([np.eye(3, 2, dtype=np.float32).reshape(1, 1, 3, 2)])
    model.get_layer("logits").set_weights([LOGIT_WEIGHTS, np.zeros(3, np.float32)])
    return model


@pytest.mark.parametrize("nesting", ["flat", "map", "pooled"])
def test_grad_cam_finds_each_class_where_its_evidence_is(nesting: str) -> None:
    model, images = _classifier(nesting), tf.constant(np.repeat(_halves(), 3, axis=0))
    heat = grad_cam(model, images, [0, 1, 2])
    assert heat.shape == (3, HEIGHT // 2, WIDTH // 2) and heat.dtype == np.float32
    left, right = heat[..., : WIDTH // 4], heat[..., WIDTH // 4 :]
    assert left[1].sum() > 0 and right[1].sum() == 0  # class 1: the left half, its only evidence
    assert right[0].sum() > 0 and left[0].sum() == 0  # class 0: the right half
    np.testing.assert_allclose(heat[1], np.tile([1, 1, 1, 0, 0, 0], (HEIGHT // 2, 1)), atol=1e-6)
    assert heat[0].max() == pytest.approx(1) and heat.min() == 0
    assert not heat[2].any()  # no evidence at all: a map of zeros, not NaN


def test_grad_cam_on_a_named_layer_has_that_layers_size() -> None:
    heat = grad_cam(_classifier("flat"), tf.constant(_halves()), [1], layer="features")
    assert heat.shape == (1, HEIGHT, WIDTH)
    assert heat[0, :, : WIDTH // 2].min() == pytest.approx(1) and not heat[0, :, WIDTH // 2 :].any()


def test_grad_cam_refuses_what_it_cannot_do() -> None:
    model, image = _classifier("flat"), tf.constant(_halves())
    with pytest.raises(ValueError, match="has no layer named 'conv5' in its graph or its sub-models' graphs"):
        grad_cam(model, image, [1], layer="conv5")
    with pytest.raises(ValueError, match="2 class ids for 1 images"):
        grad_cam(model, image, [1, 2])
    with pytest.raises(ValueError, match=r"class ids \[3\] outside 0..2"):
        grad_cam(model, image, [3])


def _encoded(colour: tuple[int, int, int], size: tuple[int, int] = (30, 30)) -> bytes:
    encoded = io.BytesIO()
    Image.new("RGB", size, colour).save(encoded, format="PNG")
    return encoded.getvalue()


def _blue_pixels(picture: Image.Image) -> int:
    return int((np.asarray(picture) == ACCURACY_COLOUR).all(axis=-1).sum())


def test_the_reliability_diagram_draws_a_bar_as_high_as_each_bins_accuracy() -> None:
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(4), size=100)
    diagram = reliability_diagram(classification_metrics(rng.integers(0, 4, 100), probabilities, "abcd")["reliability"])
    assert diagram.mode == "RGB" and min(diagram.size) > 300 and np.asarray(diagram).var() > 0
    # One full bin, then the same bin half right: the bar is half as high.
    full = [{"lo": 0.8, "hi": 0.9, "count": 4, "accuracy": 1.0, "confidence": 0.85}]
    half = [{**full[0], "accuracy": 0.5}]
    full_bar, half_bar = _blue_pixels(reliability_diagram(full)), _blue_pixels(reliability_diagram(half))
    assert half_bar > 0 and full_bar == pytest.approx(2 * half_bar, rel=0.1)


def test_the_captioned_grid_puts_tiles_in_rows_under_their_captions() -> None:
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0), (0, 200, 200)]
    grid = captioned_grid([(_encoded(colour), "a") for colour in colours], columns=4, tile=200)
    assert grid.size == (4 * 200 + 3 * GAP, 2 * (LINE + 200) + GAP)
    pixels = np.asarray(grid)
    assert tuple(pixels[LINE + 100, 100]) == colours[0] and tuple(pixels[2 * LINE + GAP + 300, 100]) == colours[4]
    assert tuple(pixels[LINE + 100, 3 * (200 + GAP) + 100]) == colours[3]
    assert pixels[:LINE, :200].var() > 0  # the caption
    wide = captioned_grid([(_encoded((0, 0, 0), (60, 30)), "a")], tile=40)  # scaled into the square, keeping its shape
    assert wide.size == (40, LINE + 20)


def test_the_mistakes_gallery_captions_each_mistake_and_says_when_there_are_none() -> None:
    assert prediction_caption(["cat", "dog"], 0, 1, 0.968) == "true cat / predicted dog 0.97"
    gallery = mistakes_gallery([(_encoded((200, 0, 0)), 0, 1, 0.97)] * 3, ["cat", "dog"], tile=60, columns=2)
    assert gallery.height == 2 * (LINE + 60) + GAP and gallery.width > 2 * 60  # the caption is wider than a tile
    empty = mistakes_gallery([], ["cat", "dog"])
    assert empty.width < 200 and empty.height < 50 and np.asarray(empty).var() > 0
    assert not np.array_equal(np.asarray(empty), np.asarray(captioned_grid([])))  # "no mistakes", not "no images"


def test_the_gradcam_figure_lays_each_heat_map_over_its_image() -> None:
    heat = np.zeros((3, 4), np.float32)
    heat[:, :2] = 1  # the left half hot
    items = [(_encoded((0, 0, 0), (20, 10)), heat, "a.png  cat 0.91"), (_encoded((0, 0, 0), (20, 10)), heat, "b.png")]
    figure = gradcam_figure(items, height=40)
    assert figure.size == (80 + GAP + 80, 2 * (LINE + 40) + GAP)
    overlay = np.asarray(figure)[LINE : LINE + 40, 80 + GAP :].astype(int)
    assert overlay[20, 10, 0] > overlay[20, 10, 2] and overlay[20, 70, 2] > overlay[20, 70, 0]  # hot left, cold right
    assert not np.asarray(figure)[LINE : LINE + 40, :80].any()  # the image itself, black, left as it is


def test_the_gradcam_figure_refuses_a_heat_map_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"heat map 0 \('a.png'\) must be 2-D with values in 0..1"):
        gradcam_figure([(_encoded((0, 0, 0)), np.full((2, 2), 2.0), "a.png")])
