"""The quality gate, every task's: whether an evaluated model may become a new version in the
Model Registry, and why (recorded either way: a model below the gate is a result, not an error)."""

from __future__ import annotations

from dataclasses import dataclass


class QualityGateError(RuntimeError):
    """The model is below the quality gate, and ``evaluate.strict_gate`` makes that a failure."""


@dataclass(frozen=True)
class Gate:
    """The quality gate's decision on one model. ``passed`` is None when no gate is set: then
    nothing is registered. A model below the gate is an experiment's result, not an error."""

    passed: bool | None
    reason: str

    def as_report(self) -> dict:
        return {"gate_passed": None if self.passed is None else int(self.passed), "gate": self.reason}


@dataclass(frozen=True)
class GateMetric:
    """What a task's gate compares: its metric key (as registered versions are tagged), how
    people read it, and the config key of its floor."""

    key: str
    label: str
    floor_key: str


DETECT_GATE = GateMetric("map", "test mAP@[.5:.95]", "evaluate.min_map")
SEGMENT_GATE = GateMetric("mIoU", "test mIoU", "evaluate.min_miou")
CLASSIFY_METRICS = ("top1", "top5", "macro_f1", "weighted_f1")  # higher is better: what a gate may compare


def classify_gate(metric: str) -> GateMetric:
    """The classify task's gate on ``evaluate.metric``, one of :data:`CLASSIFY_METRICS`."""
    if metric not in CLASSIFY_METRICS:
        raise ValueError(f"evaluate.metric: {metric!r} cannot gate a model; use one of {', '.join(CLASSIFY_METRICS)}")
    return GateMetric(metric, f"test {metric}", "evaluate.min_value")


def quality_gate(
    value: float,
    floor: float | None,
    min_improvement: float | None,
    best_registered: float | None,
    metric: GateMetric = DETECT_GATE,
) -> Gate:
    """Whether a model scoring ``value`` may be registered: at least ``floor``, and, with
    ``min_improvement``, better by that much than ``best_registered`` (the best version already
    registered, scored on the same split; None when there is none)."""
    said = f"{metric.label} {value:.3f}"
    if floor is None and min_improvement is None:
        return Gate(None, f"no gate set ({metric.floor_key}, evaluate.min_improvement): not registered")
    if floor is not None and value < floor:
        return Gate(False, f"{said} < {metric.floor_key} {floor}: not registered")
    if min_improvement is not None and best_registered is not None and value < best_registered + min_improvement:
        return Gate(
            False,
            f"{said} < {best_registered:.3f} (the best registered version, same split) "
            f"+ evaluate.min_improvement {min_improvement}: not registered",
        )
    beats = f", best registered {best_registered:.3f}" if best_registered is not None else ""
    above = f" >= {metric.floor_key} {floor}" if floor is not None else ""
    return Gate(True, f"{said}{above}{beats}: registered")
