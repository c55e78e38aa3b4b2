"""The downstream stage of stitch training (training.downstream): each sample runs its
own offspring exactly, parents stay exact, stitches fitted alone get better at what the
offspring they sit in compute, and a killed stage resumes to the same weights."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from evostitch.data import load_dataset
from evostitch.supernet import Supernet
from evostitch.supernet.executor import combine_outputs
from evostitch.training import checkpoint, train_stitches
from evostitch.training import downstream as stage
from evostitch.training.downstream import _SampleOffspring, distillation, draw_offspring
from evostitch.training.fit import default_fit_memory


def offspring_loss(net: Supernet, x: torch.Tensor, genotypes) -> float:
    """Mean KL from the parents' output to each offspring's, on `x`, one by one."""
    refs = net.reference_genotypes
    with torch.no_grad():
        losses = [float(distillation(net(x, g), net(x, refs[g[0]]))) for g in genotypes]
    return sum(losses) / len(losses)


def trained(spec: str, train, steps: int = 150) -> torch.nn.Module:
    """A demo parent trained briefly on the digits (untrained parents give near-constant
    outputs, which any stitch imitates: nothing to learn downstream)."""
    from evostitch.models import load_model

    model = load_model(spec)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        i = torch.randint(len(train), (64,), generator=gen).tolist()
        x, y = torch.stack([train[j][0] for j in i]), torch.tensor([int(train[j][1]) for j in i])
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def digits_net():
    """Two briefly trained demo parents on the digits, stitched and fitted (no stage)."""
    torch.manual_seed(0)
    train, val = load_dataset("digits", "train"), load_dataset("digits", "val")
    a, b = trained("demo:resnet_like", train), trained("demo:mobilenet_like", train)
    net = Supernet.build([a, b], (1, 8, 8))
    train_stitches(net, train, fit_samples=256, downstream=0, progress=False)
    return net, train, val


def test_each_sample_runs_its_own_offspring_exactly(digits_net):
    net, train, _ = digits_net
    x = torch.stack([train[i][0] for i in range(24)])
    rng = random.Random(0)
    genotypes = [draw_offspring(net, rng) for _ in range(len(x))]
    assert len(set(genotypes)) > 20  # many offspring in one batch, not one
    with torch.no_grad():
        outputs = _SampleOffspring(net, genotypes, None).run(net.structure.full_plan(), x)
        for i, g in enumerate(genotypes):
            choice = net.output_choices[g[0]]
            mixed = combine_outputs(choice, {s: v[1][i : i + 1] for s, v in outputs.items()})
            clean = combine_outputs(choice, {s: v[0][i : i + 1] for s, v in outputs.items()})
            torch.testing.assert_close(mixed, net(x[i : i + 1], g), rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(clean, net(x[i : i + 1], net.reference_genotypes[g[0]]))


def test_stage_keeps_parents_exact_and_lowers_held_out_offspring_loss(digits_net):
    net, train, val = digits_net
    saved = {k: v.clone() for k, v in net.stitches.state_dict().items()}
    x = torch.stack([val[i][0] for i in range(128)])
    parents = {k: v.clone() for k, v in net.parents.state_dict().items()}
    wanted = [p.requires_grad for p in net.parents.parameters()]
    with torch.no_grad():
        before_refs = [net(x, g) for g in net.reference_genotypes]
    rng = random.Random(1)
    held = [draw_offspring(net, rng, (0.1, 0.3)) for _ in range(24)]
    before = offspring_loss(net, x, held)
    result = train_stitches(net, train, fit_samples=0, downstream=60, progress=False)
    after = offspring_loss(net, x, held)
    net.stitches.load_state_dict(saved)  # the module's fixture stays as it was
    assert result.downstream_steps == 60 and len(result.downstream_history) == 60
    assert all(map(torch.isfinite, torch.tensor(result.downstream_history)))
    assert after < 0.9 * before, (before, after)  # held-out offspring, never trained on x
    kl_before, kl_after = result.downstream_held_out
    assert kl_after < kl_before  # the stage's own held-out measure says the same
    assert "downstream stage: 60 steps" in result.summary(net)
    for key, value in net.parents.state_dict().items():
        assert torch.equal(value, parents[key]), key
    with torch.no_grad():
        for g, ref in zip(net.reference_genotypes, before_refs, strict=True):
            assert torch.equal(net(x, g), ref)  # references use no stitch: unchanged
    assert [p.requires_grad for p in net.parents.parameters()] == wanted  # as they were


def test_a_step_in_micro_batches_is_the_whole_batchs_step(digits_net):
    net, train, _ = digits_net
    saved = {k: v.clone() for k, v in net.stitches.state_dict().items()}
    x = torch.stack([train[i][0] for i in range(32)])
    steps = {}
    for micro in (32, 5):  # 5: six parts of 5 and one of 2
        net.stitches.load_state_dict(saved)
        run = stage.StageRun(1, stage.StageOptimizer(net), micro=micro, progress=False)
        history = stage.train_downstream(net, [x], run)
        steps[micro] = history, {k: v.clone() for k, v in net.stitches.state_dict().items()}
    net.stitches.load_state_dict(saved)
    assert steps[5][0] == pytest.approx(steps[32][0], rel=1e-5)
    moved = [k for k in saved if not torch.equal(steps[32][1][k], saved[k])]
    assert moved  # the step did something, and both ways the same thing (to float sums)
    for k in moved:
        whole, parts = (steps[m][1][k] - saved[k] for m in (32, 5))
        assert float((parts - whole).abs().max()) <= 1e-2 * float(whole.abs().max()), k


def test_micro_batches_follow_the_memory_budget(digits_net):
    net = digits_net[0]
    per_image = sum(
        math.prod(n.shape[1:]) * 4
        for g in net.graphs.values()
        for n in g.nodes.values()
        if n.shape is not None
    )
    assert stage.micro_batch(net, memory=1) == 1  # never below one image
    assert stage.micro_batch(net, memory=10 * per_image) == 10
    fit_budget = default_fit_memory(net)  # train_stitches' budget for the stage
    assert stage.micro_batch(net, fit_budget) >= 256  # small networks: a batch in one pass


class Squashed(nn.Module):
    """x -> tanh(3x) -> logits."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden, self.head = nn.Linear(4, 4), nn.Linear(4, 2)
        with torch.no_grad():
            self.hidden.weight.copy_(3 * torch.eye(4))
            self.hidden.bias.zero_()

    def forward(self, x):
        return self.head(torch.tanh(self.hidden(x)))


class Sharp(nn.Module):
    """x -> x -> logits +-30 x0: only the sign of x0, near 0, decides the output."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden, self.head = nn.Linear(4, 4), nn.Linear(4, 2)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.eye(4))
            self.hidden.bias.zero_()
            self.head.weight.copy_(torch.tensor([[30.0, 0, 0, 0], [-30.0, 0, 0, 0]]))
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(nn.functional.hardtanh(self.hidden(x), -100.0, 100.0))


def test_stage_fixes_a_stitch_that_least_squares_fits_for_the_wrong_inputs():
    """The stitch from tanh(3x) to x: least squares fits the slope over all of x (about
    1), where the sharp parent reads only x near 0 (slope 1/3 there), so the crossing
    offspring is overconfident; the stage moves the stitch to what the output needs."""
    torch.manual_seed(0)
    x = torch.randn(2048, 4)
    data = TensorDataset(x, torch.zeros(len(x), dtype=torch.long))
    net = Supernet.build([Squashed(), Sharp()], (4,))
    crossing = net.canonical((1, 0, 0, 0, 1))  # output b, B's hardtanh from A's tanh
    assert [sw.stitch for sw in net.plan(crossing).stitched] == ["ab1"]
    train_stitches(net, data, fit_samples=1024, downstream=0, progress=False)
    local = offspring_loss(net, x[:512], [crossing])
    train_stitches(net, data, fit_samples=0, downstream=300, progress=False)
    assert offspring_loss(net, x[:512], [crossing]) < 0.5 * local


def test_killed_stage_resumes_from_its_checkpoint_to_the_same_weights(
    digits_net, tmp_path, monkeypatch
):
    net, train, _ = digits_net
    saved = {k: v.clone() for k, v in net.stitches.state_dict().items()}
    kwargs = {"fit_samples": 0, "downstream": 12, "checkpoint_every": 5, "progress": False}
    train_stitches(net, train, **kwargs)
    whole = {k: v.clone() for k, v in net.stitches.state_dict().items()}

    net.stitches.load_state_dict(saved)
    real, calls = stage.offspring_loss, []

    def killed_at_step_8(*args, **kw):
        calls.append(torch.is_grad_enabled())  # a training step, not the held-out measure
        if sum(calls) > 8:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(stage, "offspring_loss", killed_at_step_8)
    with pytest.raises(KeyboardInterrupt):
        train_stitches(net, train, checkpoint_dir=tmp_path, **kwargs)
    monkeypatch.setattr(stage, "offspring_loss", real)
    meta, _ = checkpoint._read(tmp_path, tensors=False)
    assert meta["step"] == 5  # the last checkpoint before the kill, mid-stage
    net.stitches.load_state_dict(saved)  # what a new process would hold before resuming
    result = train_stitches(net, train, checkpoint_dir=tmp_path, **kwargs)
    for key, value in net.stitches.state_dict().items():
        assert torch.equal(value, whole[key]), key
    assert len(result.downstream_history) == 12
    net.stitches.load_state_dict(saved)


def test_a_stage_that_raises_the_held_out_loss_stops_at_its_check_undone(
    digits_net, tmp_path, monkeypatch
):
    """Held-out losses that rise by the first check (a quarter of the steps): the stage
    stops there, the fit's stitches are kept, and its checkpoint says the stage is done."""
    net, train, _ = digits_net
    saved = {k: v.clone() for k, v in net.stitches.state_dict().items()}
    measures = iter([1.0, 2.0])
    monkeypatch.setattr(stage, "held_out_loss", lambda *a, **k: next(measures))
    kwargs = {"fit_samples": 0, "downstream": 12, "checkpoint_dir": tmp_path, "progress": False}
    result = train_stitches(net, train, **kwargs)
    assert len(result.downstream_history) == 3 and result.downstream_held_out == [1.0, 2.0]
    for key, value in net.stitches.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert "stopped after 3 of 12 steps" in result.summary(net)
    assert "stitches before the stage were kept" in result.summary(net)
    assert checkpoint._read(tmp_path, tensors=False)[0]["step"] == 12  # stage done
    monkeypatch.setattr(stage, "held_out_loss", lambda *a, **k: 0.5)
    again = train_stitches(net, train, **kwargs)  # resumes at its end: trains nothing
    assert len(again.downstream_history) == 3
    for key, value in net.stitches.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_a_stage_killed_after_its_check_and_resumed_still_undoes_itself(
    digits_net, tmp_path, monkeypatch
):
    """Killed between its check (passed) and its end, resumed in a new process whose
    final held-out loss is higher than before the stage: the resumed stage compares with
    the loss from before the kill and goes back to the stitches it started from, both
    kept in the checkpoint."""
    net, train, _ = digits_net
    saved = {k: v.clone() for k, v in net.stitches.state_dict().items()}
    measures = iter([1.0, 0.5, 2.0])  # before, at the check (3 of 12), at the end
    monkeypatch.setattr(stage, "held_out_loss", lambda *a, **k: next(measures))
    real, calls = stage.offspring_loss, []

    def killed_at_step_8(*args, **kw):
        calls.append(1)
        if len(calls) > 8:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(stage, "offspring_loss", killed_at_step_8)
    kwargs = {"fit_samples": 0, "downstream": 12, "checkpoint_every": 5, "progress": False}
    with pytest.raises(KeyboardInterrupt):
        train_stitches(net, train, checkpoint_dir=tmp_path, **kwargs)
    monkeypatch.setattr(stage, "offspring_loss", real)
    assert checkpoint._read(tmp_path, tensors=False)[0]["step"] == 5
    moved = {k: v.clone() for k, v in net.stitches.state_dict().items()}
    assert any(not torch.equal(moved[k], saved[k]) for k in saved)  # the stage had moved them

    net.stitches.load_state_dict(moved)  # a new process: the checkpoint's stitches come back
    result = train_stitches(net, train, checkpoint_dir=tmp_path, **kwargs)
    assert result.downstream_held_out == [1.0, 2.0]
    assert len(result.downstream_history) == 12
    for key, value in net.stitches.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert "stitches before the stage were kept" in result.summary(net)
    net.stitches.load_state_dict(saved)


def test_a_checkpoint_with_a_damaged_stage_start_is_refused_in_one_line(digits_net, tmp_path):
    net, train, _ = digits_net
    opt = stage.StageOptimizer(net)
    start = {k: v.clone() for k, v in net.stitches.state_dict().items()}
    key = next(iter(start))
    start[key] = start[key][:1]  # other shape
    checkpoint.save_checkpoint(net, opt, tmp_path, 3, {"step": 3}, [0.1], (1.0, start))
    with pytest.raises(Exception, match="damaged checkpoint.*other shapes"):
        checkpoint.load_checkpoint(net, opt, tmp_path, {"step": 3})
