from __future__ import annotations

from pathlib import Path

import pytest

from odpipe.synthetic import SyntheticSpec

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("circle", "square", "triangle")


@pytest.fixture
def spec() -> SyntheticSpec:
    """A small synthetic dataset spec, as the smoke experiment uses."""
    return SyntheticSpec(
        num_images=12,
        classes=CLASSES,
        seed=3,
        min_side=96,
        max_side=128,
        min_objects=1,
        max_objects=4,
        min_object_frac=0.15,
        max_object_frac=0.5,
        max_overlap=0.35,
    )
