"""odpipe: a DVC + Hydra + MLflow pipeline around the TF2 Object Detection API."""

import os

# TensorFlow prints pages of C++ start-up chatter (CUDA probes, oneDNN notices) on every
# import; stage logs are for the user, so keep only warnings and errors unless asked.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Albumentations asks PyPI for a newer release on import: slow offline, and not our business.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
