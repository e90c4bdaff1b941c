"""odpipe: a DVC + Hydra + MLflow pipeline around the TF2 Object Detection API."""

import os
import warnings

# TensorFlow prints C++ start-up chatter on every import, errors included that are not errors
# (TF 2.15 registers its cuDNN/cuFFT/cuBLAS plugins twice and says so, GPU or not); stage logs
# are for the user. Real failures still raise in Python; TF_CPP_MIN_LOG_LEVEL=0 shows it all.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# google-api-core (pulled in by the OD API's dependencies) warns about Python 3.11's end of life.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core")
# Albumentations asks PyPI for a newer release on import: slow offline, and not our business.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# Models registered before odpipe's modules moved into packages name their classes by the old
# paths: keep those importing (odpipe.moved says which, and why).
from odpipe.moved import install as _install_moved  # noqa: E402

_install_moved()
