"""Stitch training and offspring evaluation on a small real-data supernetwork."""

import contextlib
import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from evostitch import Supernet
from evostitch.data import load_dataset
from evostitch.errors import SupernetError
from evostitch.evaluation import Evaluator
from evostitch.models import load_model
from evostitch.training import (
    checkpoint,
    fit,
    forward_random,
    held_out_losses,
    least_squares_init,
    loop,
    parent_tensors,
    train_stitches,
)

QUIET = {"batch_size": 32, "seed": 1, "downstream": 0, "progress": False}


def small_supernet() -> Supernet:
    torch.manual_seed(0)
    return Supernet.build(["demo:resnet_like", "demo:mobilenet_like"], (1, 8, 8))


def stitch_state(net: Supernet) -> dict:
    return {k: v.clone() for k, v in net.stitches.state_dict().items()}


def clean_losses(net: Supernet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each stitch's MSE to the parent's tensor when fed the other parent's own tensor."""
    pairs = parent_tensors(net, x)
    return {k: F.mse_loss(net.stitches[k](src), dst) for k, (src, dst) in pairs.items()}


def test_parent_tensors_are_what_the_supernet_feeds_its_stitches():
    net = small_supernet()
    x = torch.stack([load_dataset("digits", "train")[i][0] for i in range(8)])
    fed = {}
    for k, stitch in net.stitches.items():
        stitch.register_forward_hook(lambda _m, args, _o, k=k: fed.__setitem__(k, args[0]))
    forward_random(net, x, p=0.0)  # in-place ReLUs must not have changed the copies
    pairs = parent_tensors(net, x)
    for j, sw in enumerate(net.switches):
        partner = net.switches[j ^ 1]  # same pair, other direction
        src, dst = pairs[sw.stitch]
        assert torch.equal(src, fed[sw.stitch]) and torch.equal(dst, fed[partner.stitch])


def test_training_lowers_stitch_loss_and_leaves_parents_alone():
    net = small_supernet()
    parents = {k: v.clone() for k, v in net.parents.state_dict().items()}
    result = train_stitches(
        net,
        load_dataset("digits", "train"),
        epochs=3,
        batch_size=32,
        fit_samples=0,  # from the constructor's initialisation
        downstream=0,
        progress=False,
    )
    first, last = sum(result.history[:5]) / 5, sum(result.history[-5:]) / 5
    assert last < 0.7 * first
    assert set(result.stitch_losses) == set(net.stitches.keys())
    for k, v in net.parents.state_dict().items():  # weights and batch-norm statistics
        assert torch.equal(v, parents[k]), k


def test_least_squares_init_is_the_mse_optimum():
    net = small_supernet()
    data = load_dataset("digits", "train")
    x = torch.stack([data[i][0] for i in range(256)])
    before = clean_losses(net, x)
    least_squares_init(net, x, ridge=1e-9, device="cpu")
    after = clean_losses(net, x)
    assert sum(after.values()) < 0.5 * sum(before.values())
    assert all(after[k] <= before[k] + 1e-6 for k in after)
    sum(after.values()).backward()  # at the optimum the gradient vanishes
    for k, stitch in net.stitches.items():
        grad = torch.cat([p.grad.flatten() for p in stitch.parameters()])
        scale = float(after[k].detach().sqrt()) + 1e-3
        assert grad.abs().max() < 1e-3 * scale, k


def test_a_fit_in_passes_under_a_memory_budget_equals_the_fit_in_one():
    data = load_dataset("digits", "train")
    x = torch.stack([data[i][0] for i in range(128)])
    one, split = small_supernet(), small_supernet()
    sizes = fit.equations_bytes(one)
    budget = max(sizes.values()) * 2
    passes = fit.fit_passes(sizes, budget)
    assert len(passes) > 2 and sorted(k for p in passes for k in p) == sorted(sizes)
    assert all(sum(sizes[k] for k in p) <= budget for p in passes)
    walked = []
    real = fit._walk
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fit, "_walk", lambda *a, **k: walked.append(1) or real(*a, **k))
        least_squares_init(one, x, device="cpu")  # default budget: one pass
        assert len(walked) == 1
        least_squares_init(split, list(x.split(64)), memory=budget, device="cpu")
        assert len(walked) == 1 + len(passes)
    for k, v in stitch_state(one).items():
        assert torch.equal(v, split.stitches.state_dict()[k]), k


def test_fit_passes_balance_and_give_an_oversized_stitch_its_own():
    sizes = {"a": 10, "b": 6, "c": 5, "d": 4, "e": 3, "big": 40}
    passes = fit.fit_passes(sizes, budget=12)
    assert ["big"] in passes
    loads = sorted(sum(sizes[k] for k in p) for p in passes if p != ["big"])
    assert len(passes) == 4 and loads == [9, 9, 10]  # 28 in 3 passes, none over 12
    assert fit.fit_passes(sizes, budget=1000) == [["big", "a", "b", "c", "d", "e"]]
    assert fit.fit_passes({}, budget=1) == []


def test_a_one_shot_iterator_is_refused_when_the_fit_needs_passes():
    net = small_supernet()
    x = torch.stack([load_dataset("digits", "train")[i][0] for i in range(64)])
    with pytest.raises(SupernetError, match="one-shot iterator"):
        least_squares_init(net, iter(x.split(32)), memory=1, device="cpu")
    with pytest.raises(SupernetError, match="at least 1 byte"):
        least_squares_init(net, x, memory=0, device="cpu")


class Crash(Exception):
    pass


def test_checkpoint_resume_gives_same_weights(tmp_path, monkeypatch):
    data = load_dataset("digits", "train")
    straight = small_supernet()
    train_stitches(straight, data, samples=640, fit_samples=128, **QUIET)

    crashed = small_supernet()
    calls = {"n": 0}
    real = loop.forward_random

    def crash_at_step_10(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 10:
            raise Crash
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "forward_random", crash_at_step_10)
    with contextlib.suppress(Crash):
        train_stitches(
            crashed,
            data,
            samples=640,
            fit_samples=128,
            **QUIET,
            checkpoint_dir=tmp_path,
            checkpoint_every=4,
        )
    assert calls["n"] == 10  # it did crash after the step-8 checkpoint
    monkeypatch.undo()
    resumed = small_supernet()
    train_stitches(
        resumed,
        data,
        samples=640,
        fit_samples=128,
        **QUIET,
        checkpoint_dir=tmp_path,
        checkpoint_every=4,
    )
    a, b = stitch_state(straight), stitch_state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(
        a["ba0.layer.weight"], stitch_state(small_supernet())["ba0.layer.weight"]
    )


def test_evaluator_reference_genotypes_match_parents():
    net = small_supernet()
    test = load_dataset("digits", "test")
    ev = Evaluator(net, test, num_classes=10, batch_size=64, device="cpu")
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = torch.tensor([int(test[i][1]) for i in range(len(test))])
    for choice, genotype in enumerate(net.reference_genotypes[:2]):
        model = net.graphs["ab"[choice]].module
        with torch.no_grad():
            acc = (model(x).argmax(1) == y).float().mean().item()
        m = ev.metrics(genotype)
        assert abs(m["accuracy"] - acc) < 1e-6
        assert m["macs"] == net.cost(genotype)["macs"]
    assert (
        ev.objectives(net.reference_genotypes[0])[0]
        == -ev.metrics(net.reference_genotypes[0])["accuracy"]
    )


def test_a_killed_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    """The checkpoint is one file replaced atomically: a write that dies half way (a kill,
    a full disk) leaves the previous checkpoint, and resuming from it gives the weights of
    an uninterrupted run."""
    data = load_dataset("digits", "train")
    straight = small_supernet()
    train_stitches(straight, data, samples=640, fit_samples=128, **QUIET)

    real_save, writes = checkpoint.save_file, {"n": 0}

    def dies_on_the_third_write(tensors, path, metadata=None):  # after the fit's, step 4's
        writes["n"] += 1
        if writes["n"] == 3:
            Path(path).write_bytes(b"half a checkpoint")
            raise Crash
        real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", dies_on_the_third_write)
    options = {"samples": 640, "fit_samples": 128, **QUIET}
    with contextlib.suppress(Crash):
        train_stitches(
            small_supernet(), data, checkpoint_dir=tmp_path, checkpoint_every=4, **options
        )
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["train_state.safetensors"]
    meta, _ = checkpoint._read(tmp_path)
    assert meta["step"] == 4  # the last whole checkpoint
    resumed = small_supernet()
    train_stitches(resumed, data, checkpoint_dir=tmp_path, checkpoint_every=4, **options)
    a, b = stitch_state(straight), stitch_state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_relative_losses_read_as_fractions_of_the_target_variance():
    """Two copies of one network: every stitch can be exact (relative loss ~0), while the
    raw MSE of the same stitches is on the scale of their tensors."""
    torch.manual_seed(0)
    model = load_model("demo:resnet_like")
    net = Supernet.build([model, copy.deepcopy(model)], (1, 8, 8))
    data = load_dataset("digits", "train")
    result = train_stitches(net, data, samples=64, lr=0.0, downstream=0, progress=False)  # LS
    assert set(result.relative_losses) == set(net.stitches.keys())
    assert max(result.relative_losses.values()) < 0.03  # the fit's ridge keeps it from 0
    assert all(v >= 0 for v in result.relative_losses.values())
    untrained = small_supernet()  # unrelated untrained parents: far from exact
    result = train_stitches(untrained, data, samples=64, lr=0.0, downstream=0, progress=False)
    assert max(result.relative_losses.values()) > 0.1


def test_held_out_losses_read_as_fractions_of_the_target_variance():
    """Held-out losses: ~0 where a stitch can be exact (two copies of one network), ~1 for
    a stitch that predicts its target's mean, and the default run reports them by name."""
    torch.manual_seed(0)
    model = load_model("demo:resnet_like")
    twins = Supernet.build([model, copy.deepcopy(model)], (1, 8, 8))
    data = load_dataset("digits", "train")
    result = train_stitches(twins, data, progress=False)  # defaults: fit, no gradient steps
    assert result.steps == 0 and result.held_out == min(256, len(data) // 5)
    assert set(result.held_out_losses) == set(twins.stitches.keys())
    assert max(result.held_out_losses.values()) < 0.03  # the fit's ridge keeps it from 0
    assert ", 0 of" in result.summary(twins)
    net = small_supernet()
    x = torch.stack([data[i][0] for i in range(128)])
    pairs = parent_tensors(net, x)
    with torch.no_grad():
        for key, stitch in net.stitches.items():
            target = pairs[key][1]
            stitch.layer.weight.zero_()
            stitch.layer.bias.fill_(float(target.mean()))  # predicts the target's mean
    losses = held_out_losses(net, x.split(32), device="cpu")
    assert all(abs(v - 1) < 1e-4 for v in losses.values()), losses


def test_the_ridge_shrinks_the_fit_toward_the_targets_mean():
    """Twin parents: the default ridge fits almost exactly; a huge one leaves every stitch
    a constant (its weights ~0, the bias unpenalised: each channel's mean), far worse."""
    torch.manual_seed(0)
    model = load_model("demo:resnet_like")
    data = load_dataset("digits", "train")
    losses, largest = {}, {}
    for ridge in (1e-2, 1e6):
        twins = Supernet.build([model, copy.deepcopy(model)], (1, 8, 8))
        result = train_stitches(
            twins, data, fit_samples=256, ridge=ridge, downstream=0, progress=False
        )
        losses[ridge] = result.held_out_losses
        largest[ridge] = max(
            float(s.layer.weight.detach().abs().max()) for s in twins.stitches.values()
        )
    assert largest[1e6] < 1e-4 < 0.1 < largest[1e-2]
    assert max(losses[1e-2].values()) < 0.03
    assert all(losses[1e6][k] > 0.1 for k in losses[1e-2]), losses[1e6]


class Recording(torch.utils.data.Dataset):
    """Records which samples are read in which phase of a run."""

    def __init__(self, inner) -> None:
        self.inner, self.phase = inner, "fit and train"
        self.read: dict[str, set[int]] = {"fit and train": set(), "held out": set()}

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i):
        self.read[self.phase].add(i)
        return self.inner[i]


def test_held_out_images_are_never_fitted_or_trained_on(monkeypatch):
    data = Recording(load_dataset("digits", "train"))
    real_held_out = loop.held_out_losses

    def held_out(*args, **kwargs):
        data.phase = "held out"
        return real_held_out(*args, **kwargs)

    monkeypatch.setattr(loop, "held_out_losses", held_out)
    result = train_stitches(
        small_supernet(), data, fit_samples=300, steps=20, workers=0, downstream=0, progress=False
    )
    assert len(data.read["held out"]) == result.held_out == min(256, len(data) // 5)
    assert not data.read["held out"] & data.read["fit and train"]
    assert len(data.read["fit and train"]) > 300  # the fit's images and the steps' batches


@pytest.mark.parametrize(
    "budget, says",
    [
        ({"steps": 5, "epochs": 1.0}, "one gradient budget"),
        ({"steps": -1}, ">= 0"),
        ({"fit_samples": -1}, ">= 0"),
    ],
)
def test_a_bad_gradient_budget_is_refused_before_any_work(budget, says):
    with pytest.raises(SupernetError, match=says):
        train_stitches(small_supernet(), load_dataset("digits", "train"), progress=False, **budget)


def test_a_diverging_stitch_stops_training_and_is_never_saved(tmp_path):
    net = small_supernet()
    with pytest.raises(SupernetError, match=r"stitch \w+ \(.* -> .*\) diverged at step"):
        train_stitches(
            net, load_dataset("digits", "train"), lr=1e30, fit_samples=0, steps=4, progress=False
        )
    with torch.no_grad():
        next(iter(net.stitches.values())).layer.weight.fill_(float("nan"))
    with pytest.raises(SupernetError, match="not finite"):
        net.save(tmp_path / "sn")
    assert not (tmp_path / "sn" / "supernet.json").exists()


def test_a_dataloader_is_taken_as_its_dataset():
    """The Python API takes a user's DataLoader where it takes a Dataset: training gives
    the same stitches (our seeded batches, the loader's workers), evaluation the same
    metrics."""
    from torch.utils.data import DataLoader, Subset

    data = Subset(load_dataset("digits", "train"), range(200))  # not an in-memory array
    nets = [small_supernet(), small_supernet()]
    train_stitches(nets[0], data, samples=96, batch_size=32, downstream=0, progress=False)
    loader = DataLoader(data, batch_size=7, shuffle=True, num_workers=1)
    train_stitches(nets[1], loader, samples=96, batch_size=32, downstream=0, progress=False)
    a, b = stitch_state(nets[0]), stitch_state(nets[1])
    assert all(torch.equal(a[k], b[k]) for k in a)
    genotype = [1] + [1, 0] * ((len(nets[0].genotype_spec) - 1) // 2)
    val = load_dataset("digits", "val")
    direct = Evaluator(nets[0], val, num_classes=10, batch_size=64, device="cpu")
    looped = Evaluator(nets[0], DataLoader(val, batch_size=5), 10, batch_size=64, device="cpu")
    assert direct.metrics(genotype) == looped.metrics(genotype)


class Counting(torch.utils.data.Dataset):
    """A dataset on disk would decode here: counts the samples read."""

    def __init__(self, inner) -> None:
        self.inner, self.reads = inner, 0

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i):
        self.reads += 1
        return self.inner[i]


@pytest.mark.parametrize("cache_bytes, rereads", [(1 << 30, 0), (0, 1)])
def test_evaluator_opens_its_split_at_the_first_evaluation(cache_bytes, rereads):
    """A search driver builds an evaluator it never calls (Ray workers evaluate): it must
    read nothing. A split within cache_bytes is decoded once; a larger one streams again."""
    net = small_supernet()
    data = Counting(load_dataset("digits", "val"))
    ev = Evaluator(net, data, 10, batch_size=64, device="cpu", workers=0, cache_bytes=cache_bytes)
    assert data.reads == 0
    genotype = [0] * len(net.genotype_spec)
    first = ev.metrics(genotype)
    assert len(data) <= data.reads <= len(data) + 1  # + a peek at a sample's size
    before = data.reads
    assert ev.metrics(genotype) == first
    assert data.reads - before == rereads * len(data)
