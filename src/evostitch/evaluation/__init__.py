"""Scoring offspring on data: task metrics, one offspring at a time or a population."""

from .evaluator import Evaluator
from .metrics import ClassificationMetric, SegmentationMetric, make_metric, primary_metric
from .shared import DEFAULT_SHARED_BYTES, SharedEvaluator

__all__ = [
    "DEFAULT_SHARED_BYTES",
    "ClassificationMetric",
    "Evaluator",
    "SegmentationMetric",
    "SharedEvaluator",
    "make_metric",
    "primary_metric",
]
