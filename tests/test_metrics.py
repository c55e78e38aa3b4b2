import math

import pytest
import torch

from evostitch.data import ArrayDataset
from evostitch.errors import EvostitchError
from evostitch.evaluation.metrics import (
    TEMPERATURES,
    ClassificationMetric,
    SegmentationMetric,
    evaluate,
    fit_temperature,
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


def test_temperature_scaling_lowers_ece_when_built_overconfident_by_hand():
    # 2 classes, every sample the same logits (10 a, 0) with a = logit(0.7); 70% are class 0:
    # calibrated logits would be (a, 0), so these are 10x overconfident: the best T is 10
    a, n = math.log(0.7 / 0.3), 100
    target = (torch.arange(n) >= 70).long()
    logits = torch.tensor([[10 * a, 0.0]], dtype=torch.float64).repeat(n, 1)
    m = ClassificationMetric(2, temperatures=TEMPERATURES)
    m.update(logits, target)
    before, curves = m.compute(), m.temperature_curves()
    assert before["accuracy"] == 0.7  # the argmax is class 0 at every temperature

    def sigmoid(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    def nll(t: float) -> float:  # 70% pay -log p(class 0), 30% -log p(class 1)
        return -(0.7 * math.log(sigmoid(10 * a / t)) + 0.3 * math.log(sigmoid(-10 * a / t)))

    # all samples share one confidence, so one bin: ECE = |0.7 - confidence|
    assert before["ece"] == pytest.approx(sigmoid(10 * a) - 0.7, abs=1e-12)
    assert before["cross_entropy"] == pytest.approx(nll(1.0), abs=1e-12)
    assert curves["cross_entropy"] == pytest.approx([nll(t) for t in TEMPERATURES], abs=1e-12)
    i = fit_temperature(curves)
    t = TEMPERATURES[i]
    assert t == min(TEMPERATURES, key=nll)  # 2^(53/16) = 9.93, one grid step from 10
    assert 10 / 2 ** (1 / 16) < t < 10 * 2 ** (1 / 16)
    assert curves["ece"][i] == pytest.approx(abs(sigmoid(10 * a / t) - 0.7), abs=1e-12)
    assert curves["ece"][i] < 0.01 < 0.29 < before["ece"]
    assert curves["cross_entropy"][i] < before["cross_entropy"]


def overconfident(n: int = 3000, classes: int = 10, seed: int = 0):
    """Logits 10x those of a calibrated ~70%-right classifier: labels drawn from its softmax."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, classes, generator=g, dtype=torch.float64) * 3.5
    target = torch.multinomial(z.softmax(1), 1, generator=g)[:, 0]
    return 10 * z, target


def test_temperature_fitted_on_validation_calibrates_held_out_data():
    (val_x, val_y), (test_x, test_y) = overconfident(seed=0), overconfident(seed=1)
    val, test = (ClassificationMetric(10, temperatures=TEMPERATURES) for _ in range(2))
    for i in range(0, 3000, 256):
        val.update(val_x[i : i + 256], val_y[i : i + 256])
        test.update(test_x[i : i + 256], test_y[i : i + 256])
    i = fit_temperature(val.temperature_curves())
    assert 8 < TEMPERATURES[i] < 12  # the true one is 10
    before, after = test.compute(), test.temperature_curves()
    assert 0.65 < before["accuracy"] < 0.75
    assert after["ece"][i] < 0.03 < 0.2 < before["ece"]
    assert after["cross_entropy"][i] < before["cross_entropy"] / 2


def test_temperature_one_is_the_uncalibrated_metric_exactly():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(300, 7, generator=g) * 4, torch.randint(0, 7, (300,), generator=g)
    m = ClassificationMetric(7, temperatures=TEMPERATURES)
    for i in range(0, 300, 64):
        m.update(x[i : i + 64], y[i : i + 64])
    plain, curves, one = m.compute(), m.temperature_curves(), TEMPERATURES.index(1.0)
    assert curves["ece"][one] == plain["ece"]
    assert curves["cross_entropy"][one] == plain["cross_entropy"]
    assert curves["temperature"] == list(TEMPERATURES)


def test_temperature_curves_do_not_depend_on_batch_order():
    x, y = overconfident(n=500)
    whole = ClassificationMetric(10, temperatures=TEMPERATURES)
    whole.update(x, y)
    order = torch.randperm(500, generator=torch.Generator().manual_seed(1))
    shuffled = ClassificationMetric(10, temperatures=TEMPERATURES)
    for part in order.split(37):
        shuffled.update(x[part], y[part])
    assert torch.equal(whole.t_count, shuffled.t_count)  # counts are exact
    assert torch.equal(whole.t_correct, shuffled.t_correct)
    a, b = whole.temperature_curves(), shuffled.temperature_curves()
    assert a["ece"] == pytest.approx(b["ece"], abs=1e-12)
    assert a["cross_entropy"] == pytest.approx(b["cross_entropy"], abs=1e-12)
    assert whole.compute() == pytest.approx(shuffled.compute(), abs=1e-12)


def test_temperature_scaling_is_for_classifiers():
    assert make_metric("classification", 3, calibrate=True).temperatures == list(TEMPERATURES)
    with pytest.raises(EvostitchError, match="applies to classifiers"):
        make_metric("segmentation", 3, calibrate=True)
    with pytest.raises(EvostitchError, match="without temperatures"):
        ClassificationMetric(3).temperature_curves()
    with pytest.raises(EvostitchError, match="positive"):
        ClassificationMetric(3, temperatures=[1.0, 0.0])
