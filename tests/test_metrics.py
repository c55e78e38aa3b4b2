import math

import pytest
import torch

from evostitch.data import ArrayDataset
from evostitch.errors import EvostitchError
from evostitch.evaluation.metrics import (
    ClassificationMetric,
    SegmentationMetric,
    evaluate,
    make_metric,
    primary_metric,
)


def _logits(probs):
    return torch.tensor(probs, dtype=torch.float64).log()


def test_accuracy_cross_entropy_and_ece_by_hand():
    # confidences 0.9 (hit), 0.91 (miss) share bin 13; 0.7 (hit) bin 10; 0.62 (miss) bin 9
    probs = [[0.9, 0.1], [0.09, 0.91], [0.3, 0.7], [0.62, 0.38]]
    target = torch.tensor([0, 0, 1, 1])
    m = ClassificationMetric(2)
    m.update(_logits(probs), target)
    out = m.compute()
    assert out["accuracy"] == 0.5 and out["top5_accuracy"] == 1.0 and out["n"] == 4
    ce = -(math.log(0.9) + math.log(0.09) + math.log(0.7) + math.log(0.38)) / 4
    assert out["cross_entropy"] == pytest.approx(ce, abs=1e-12)
    ece = (2 * abs(0.5 - 0.905) + abs(1 - 0.7) + abs(0 - 0.62)) / 4
    assert out["ece"] == pytest.approx(ece, abs=1e-12)


def test_top5_and_batching_invariance():
    logits = torch.tensor([[7.0, 6, 5, 4, 3, 2, 1], [7.0, 6, 5, 4, 3, 2, 1]])
    target = torch.tensor([4, 5])  # 5th best: top-5 hit; 6th best: miss
    m = make_metric("classification", 7)
    m.update(logits, target)
    assert m.compute()["top5_accuracy"] == 0.5 and m.compute()["accuracy"] == 0.0
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 10, generator=g), torch.randint(0, 10, (50,), generator=g)
    whole, parts = ClassificationMetric(10), ClassificationMetric(10)
    whole.update(x, y)
    for i in range(0, 50, 7):
        parts.update(x[i : i + 7], y[i : i + 7])
    a, b = whole.compute(), parts.compute()
    assert a["accuracy"] == b["accuracy"] and a["top5_accuracy"] == b["top5_accuracy"]
    assert a["ece"] == pytest.approx(b["ece"], abs=1e-12)
    assert a["cross_entropy"] == pytest.approx(b["cross_entropy"], abs=1e-12)


def test_miou_on_2x3_example():
    target = torch.tensor([[[0, 0, 1], [1, 2, 2]]])
    pred = torch.tensor([[[0, 1, 1], [1, 2, 0]]])
    logits = torch.nn.functional.one_hot(pred, 4).permute(0, 3, 1, 2).float()
    m = SegmentationMetric(4)  # class 3 never occurs: left out of the mean
    m.update(logits, target)
    assert m.confusion[:3, :3].tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    out = m.compute()
    assert out["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert out["pixel_accuracy"] == pytest.approx(4 / 6) and out["n"] == 6
    ignored = torch.full_like(target, 255)
    m.update(logits, ignored)  # ignore index: no change
    assert m.compute() == out


def test_segmentation_errors_and_factory():
    m = make_metric("segmentation", 2)
    with pytest.raises(EvostitchError, match="out of range"):
        m.update(torch.zeros(1, 2, 1, 2), torch.tensor([[[0, 3]]]))
    with pytest.raises(EvostitchError, match="do not fit"):
        m.update(torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(EvostitchError):
        make_metric("detection", 3)
    assert primary_metric("classification") == "accuracy"
    assert primary_metric("segmentation") == "miou"


def test_evaluate_runs_model_in_eval_mode():
    x = torch.eye(3).repeat(4, 1).reshape(12, 3)
    y = torch.arange(3).repeat(4)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3, bias=False), torch.nn.Dropout(0.9))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(3) * 5)
    out = evaluate(model, ArrayDataset(x, y, torch.arange(12)), make_metric("classification", 3))
    assert out["accuracy"] == 1.0 and not model.training
