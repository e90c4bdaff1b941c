"""Where a backbone's first weights come from: ``model.backbone_init``, never a download by surprise.

The OD API's CenterNet MobileNetV2 builders (feature extractors ``mobilenet_v2``,
``mobilenet_v2_fpn`` and ``mobilenet_v2_fpn_sep_conv``) ask Keras for ImageNet weights whenever
the depth multiplier is 1.0. So building such a model downloads them: offline the build fails,
online a "from scratch" experiment silently starts from a pretrained backbone, and each stage
that builds the model (pipeline_config's check, train, its validation, export) does it again.

Importing this module (``odpipe.detect.tfcompat`` does, so every odpipe module that touches the OD API
has) routes those builders' ``weights`` through odpipe: random (``None``) at any depth
multiplier, unless a ``with backbone_init("imagenet", config):`` block is open in the building
thread. The train stage opens one around training, so only training's model starts from
ImageNet; every other build stays offline (the weights then come from a checkpoint anyway).
"""

from __future__ import annotations

import contextvars
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from keras.src.applications import mobilenet_v2 as keras_mobilenet_v2
from keras.src.utils import data_utils
from object_detection.models import (
    center_net_mobilenet_v2_feature_extractor,
    center_net_mobilenet_v2_fpn_feature_extractor,
)
from object_detection.models.keras_models import mobilenet_v2 as od_mobilenet_v2
from object_detection.protos import pipeline_pb2

from odpipe.core.manifest import sha256_file

BACKBONE_INITS = ("random", "imagenet")
# CenterNet's feature extractors over the OD API's Keras MobileNetV2 (which honour depth_multiplier).
CENTER_NET_MOBILENET_V2 = ("mobilenet_v2", "mobilenet_v2_fpn", "mobilenet_v2_fpn_sep_conv")
# The feature extractors (by meta-architecture) whose backbone can start from ImageNet.
IMAGENET_BACKBONES = {"center_net": CENTER_NET_MOBILENET_V2}
# MobileNetV2's last convolution has 1280 x min(multiplier, 1) channels in the OD API's network and
# 1280 x max(multiplier, 1) in Keras' (whose ImageNet files exist for 0.35 to 1.4): they fit at 1.0 only.
IMAGENET_DEPTH_MULTIPLIERS = (1.0,)

_INIT: contextvars.ContextVar[str] = contextvars.ContextVar("odpipe_backbone_init", default="random")


class BackboneDownloadError(RuntimeError):
    """The ImageNet weights asked for could not be downloaded."""


def check_backbone_init(config: pipeline_pb2.TrainEvalPipelineConfig, init: str) -> None:
    """Refuse a ``model.backbone_init`` this model cannot honour, naming what it can."""
    if init not in BACKBONE_INITS:
        raise ValueError(f"model.backbone_init must be one of {', '.join(BACKBONE_INITS)}, got {init!r}")
    if init == "random":
        return
    arch = config.model.WhichOneof("model")
    extractor = getattr(config.model, arch).feature_extractor.type if arch else ""
    if extractor not in IMAGENET_BACKBONES.get(arch, ()):
        supported = "; ".join(f"{a} with {', '.join(names)}" for a, names in IMAGENET_BACKBONES.items())
        raise ValueError(
            f"model.backbone_init=imagenet: this {arch} model's {extractor!r} backbone has no ImageNet weights "
            f"odpipe can load (supported: {supported}). A zoo model starts from its own checkpoint "
            "(model.fine_tune=true); set model.backbone_init=random"
        )
    multiplier = round(config.model.center_net.feature_extractor.depth_multiplier, 4)
    if multiplier not in IMAGENET_DEPTH_MULTIPLIERS:
        raise ValueError(
            f"model.backbone_init=imagenet: no ImageNet weights fit depth multiplier {multiplier} "
            f"(only {', '.join(map(str, IMAGENET_DEPTH_MULTIPLIERS))}: the OD API sizes MobileNetV2's last layer "
            "differently from Keras elsewhere); set model.depth_multiplier=1.0 or model.backbone_init=random"
        )
    if config.train_config.fine_tune_checkpoint:
        raise ValueError(
            "model.backbone_init=imagenet with model.fine_tune=true: the fine-tune checkpoint would overwrite "
            "the ImageNet backbone; pick one (model.backbone_init=random keeps the checkpoint's)"
        )


def imagenet_weights(depth_multiplier: float) -> str:
    """The local path of Keras' ImageNet MobileNetV2 weights (no top) for ``depth_multiplier``,
    downloaded into Keras' cache (``~/.keras/models``) the first time."""
    # Keras' own name and place for them: the file Keras would fetch given weights="imagenet"
    # and no input shape (224, its default), read at call time so a mirror can be patched in.
    alpha = round(float(depth_multiplier), 2)  # a float32 from the proto: 0.35 is 0.3499999940...
    name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_224_no_top.h5"
    url = keras_mobilenet_v2.BASE_WEIGHT_PATH + name
    try:
        return data_utils.get_file(name, url, cache_subdir="models")
    except Exception as err:  # Keras raises a bare Exception for URL errors, OSError for the rest
        raise BackboneDownloadError(
            f"model.backbone_init=imagenet: downloading the ImageNet weights {url} failed ({err}). "
            f"Offline, place the file at ~/.keras/models/{name}, or set model.backbone_init=random"
        ) from err


# The OD API's MobileNetV2 keeps batch-norm moving averages with momentum 0.9997 (the CenterNet
# builders pass no conv_hyperparams to change it), a value for 300k-step TPU runs: after the
# built-in 6000 steps 17% of the moving statistics are still their initial values, after a
# 1200-step run 70%, and evaluation, which uses them, sees another network than training does
# (val heat-map loss 6.9 against 0.5 in training, val mAP 0). 0.97 is the SSD configs' decay.
BATCHNORM_MOMENTUM = 0.97


def code_digest() -> str:
    """sha256 of this module. It changes what the OD API builds (initial weights, batch norm), so
    checkpoints trained under another version of it are another model: the train stage puts it
    in the name of its work folder, or a fixed model would silently resume the broken one."""
    return sha256_file(Path(__file__))


def _mobilenet_v2(*args, weights=None, **kwargs):
    """The OD API's Keras MobileNetV2 with odpipe's weights in place of its builder's choice,
    and batch-norm statistics that follow a run of thousands of steps."""
    del weights  # the CenterNet builders' own: 'imagenet' whenever the multiplier is 1.0
    chosen = imagenet_weights(kwargs.get("alpha", 1.0)) if _INIT.get() == "imagenet" else None
    kwargs.setdefault("default_batchnorm_momentum", BATCHNORM_MOMENTUM)
    return od_mobilenet_v2.mobilenet_v2(*args, weights=chosen, **kwargs)


_ROUTED = types.SimpleNamespace(mobilenet_v2=_mobilenet_v2)


def _route() -> None:
    """Point the CenterNet MobileNetV2 modules' ``mobilenetv2`` at :data:`_ROUTED`, loudly
    failing if an OD API update moved what it replaces (a silent miss would download again)."""
    for module in (center_net_mobilenet_v2_feature_extractor, center_net_mobilenet_v2_fpn_feature_extractor):
        current = getattr(module, "mobilenetv2", None)
        if current is not od_mobilenet_v2 and current is not _ROUTED:
            raise ImportError(
                f"{module.__name__} no longer builds its backbone through keras_models.mobilenet_v2: "
                f"{__name__} cannot keep it from downloading ImageNet weights; update {__name__}"
            )
        module.mobilenetv2 = _ROUTED


@contextmanager
def backbone_init(init: str, config: pipeline_pb2.TrainEvalPipelineConfig) -> Iterator[None]:
    """Within, models built in this thread start their backbone from ``init``; ``imagenet``
    is checked against ``config`` and its weights fetched on entry, so a model that cannot use
    them or a failed download stops here, not deep inside the OD API."""
    check_backbone_init(config, init)
    if init == "imagenet":
        imagenet_weights(config.model.center_net.feature_extractor.depth_multiplier)
    token = _INIT.set(init)
    try:
        yield
    finally:
        _INIT.reset(token)


_route()
