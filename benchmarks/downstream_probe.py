"""Why the downstream stage fails on a pair: its losses per learning rate and warmup.

From the least-squares fit (cached in benchmarks/out), the downstream stage
(training.downstream) is run for --steps with each setting of --settings
(`LR[/wW][/pLO-HI]`: Adafactor's relative step, W steps of linear warmup before its
cosine, and the range the offspring's switch probability is drawn from, default
`P_RANGE`), and the script prints the training KL per tenth of the steps, the stage's
held-out KL before and after (256 training images never trained on) and the median test
accuracy of the same random offspring at p = 0.1 and 0.25 (fraction of the parents'
mean, on 500 test images) before and after. The stage is not undone here: this shows
what it does, not what `stitch` keeps.

A setting `pcLR[/mM]` uses `Preconditioned` instead of Adafactor: SGD (momentum M) along
each stitch's gradient times the inverse of its input second moment, each step sized so
its first-order decrease is LR times the batch's KL. `--refit N` instead refits the least
squares N times on the inputs stitches receive in random offspring (`refit`).

`--gradient-check` instead steps along the gradient of one fixed batch of 32 (offspring
drawn from each range) and prints the batch's KL after each step beside the first-order
prediction: the gradient path is right when they agree.

Run: .venv/bin/python benchmarks/downstream_probe.py --pair pretrained
        [--settings 1e-2,1e-3,1e-2/w20,pc0.1] [--steps 40] [--offspring 24]
        [--gradient-check] [--refit 2]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import safetensors.torch
import torch

from evostitch.data import batches, load_dataset, subset
from evostitch.evaluation import Evaluator
from evostitch.evaluation.holding import sample_offspring
from evostitch.training import downstream as stage
from evostitch.training import train_stitches
from evostitch.training.fit import RIDGE
from stitch_quality import build

P_RANGE = stage.P_RANGE
OFFSPRING_LOSS = stage.offspring_loss


class Warmup(stage.StageOptimizer):
    """The stage's optimiser with its learning rate ramped up over the first `w` steps."""

    def __init__(self, net, lr: float, w: int) -> None:
        super().__init__(net, lr)
        self.w, self.calls = w, 0

    def set_lr(self, lr: float) -> None:
        self.calls += 1
        super().set_lr(lr * min(1.0, self.calls / self.w) if self.w else lr)


class Preconditioned:
    """SGD on every stitch's linear maps with the gradient preconditioned by the inverse of
    the map's input second moment (the least-squares fit's normal equations: each stitch's
    own MSE curvature), the step scaled so that its first-order decrease is `lr` times the
    batch's loss (a Polyak-like size, free of the gradient's scale)."""

    def __init__(self, net, train, lr: float, momentum: float = 0.0, images: int = 512):
        from evostitch.training.walks import CleanWalk

        self.net, self.lr, self.momentum, self.loss = net, lr, momentum, None
        sums: dict = {}

        def visit(sw, source, target):
            rows = net.stitches[sw.stitch].rows(source.float(), target.float())
            for i, (x, _) in enumerate(rows):
                x = torch.cat([x, torch.ones_like(x[:, :1])], 1).double()
                a, n = sums.get((sw.stitch, i), (0, 0))
                sums[sw.stitch, i] = (a + x.T @ x, n + len(x))

        idx = list(range(images))
        with torch.no_grad():
            for x, _ in batches(train, [idx[i : i + 64] for i in range(0, images, 64)]):
                CleanWalk(net, visit).run(net.structure.full_plan(), x)
        self.inverse = {}
        for key, (a, n) in sums.items():
            a = a / n
            reg = torch.diag(a)[:-1].mean() * 1e-2
            self.inverse[key] = torch.linalg.inv(a + reg * torch.eye(len(a), dtype=a.dtype)).float()
        self.velocity: dict = {}
        self.opt = self

    def set_lr(self, lr: float) -> None:
        self.scale = lr / self.lr if self.lr else 0.0  # the cosine's factor

    def maps(self):
        for key, stitch in self.net.stitches.items():
            for i, layer in enumerate((stitch.layer, stitch.prefix)):
                if layer is not None and layer.weight.grad is not None:
                    yield (key, i), layer

    def step(self) -> None:
        directions, inner = {}, 0.0
        for key, layer in self.maps():
            w = layer.weight
            g = torch.cat([w.grad.reshape(w.shape[0], -1), layer.bias.grad[:, None]], 1)
            d = g @ self.inverse[key]
            directions[key] = (layer, d)
            inner += float((g * d).sum())
        if inner <= 0 or self.loss is None:
            return
        size = self.lr * getattr(self, "scale", 1.0) * self.loss / inner
        with torch.no_grad():
            for key, (layer, d) in directions.items():
                v = self.velocity.get(key)
                v = d * size if v is None else self.momentum * v + d * size
                self.velocity[key] = v
                layer.weight -= v[:, :-1].reshape_as(layer.weight)
                layer.bias -= v[:, -1]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.net.stitches.zero_grad(set_to_none=set_to_none)


def gradient_check(net, train) -> None:
    """The fixed batch's KL after steps of sizes eta * 0.1 * KL / |grad|^2 along -grad."""
    x = next(iter(batches(train, [list(range(32))])))[0]
    for p_range in [(0.003, 0.03), P_RANGE]:
        stage.P_RANGE = p_range
        genotypes = stage.step_offspring(net, 0, 0, 32)
        with stage.stitches_only(net):
            loss = stage.offspring_loss(net, x, genotypes)
            loss.backward()
            kl = float(loss.detach())
            params = [p for p in net.stitches.parameters() if p.grad is not None]
            g2 = sum(float((p.grad**2).sum()) for p in params)
            start = [p.detach().clone() for p in params]
            cells = []
            with torch.no_grad():
                for eta in (1e-3, 1e-2, 1e-1):
                    step = eta * 0.1 * kl / g2
                    for p, p0 in zip(params, start, strict=True):
                        p.copy_(p0 - step * p.grad)
                    after = float(stage.offspring_loss(net, x, genotypes))
                    cells.append(f"eta {eta:g}: {after:.4f} (first order {kl - step * g2:.4f})")
                for p, p0 in zip(params, start, strict=True):
                    p.copy_(p0)
                    p.grad = None
        print(f"p {p_range}: KL {kl:.4f}, |grad|^2 {g2:.3g}; " + "; ".join(cells), flush=True)
    stage.P_RANGE = P_RANGE


class _OffspringInputs(stage._SampleOffspring):
    """The stage's walk, no gradients, handing each stitch (the source as this sample's
    offspring computes it, the parent's own target) on every sample."""

    def __init__(self, net, genotypes, visit) -> None:
        super().__init__(net, genotypes, None)
        self.visit = visit

    def switch(self, sw, on, own, source):
        self.visit(sw, source[1], own[0])
        return super().switch(sw, on, own, source)


def refit(net, train, images: int, seed: int, ridge: float) -> float:
    """Least squares on the inputs stitches receive in random offspring (one per image,
    drawn as the stage draws them)."""
    from evostitch.training.fit import accumulator, solve_into

    normal: dict = {}
    accumulate = accumulator(net, normal, torch.float32)
    start = time.perf_counter()
    idx = list(range(images))
    with torch.no_grad():
        for k, (x, _) in enumerate(batches(train, [idx[i : i + 64] for i in range(0, images, 64)])):
            genotypes = stage.step_offspring(net, seed, k, len(x))
            _OffspringInputs(net, genotypes, accumulate).run(net.structure.full_plan(), x)
    solve_into(net, normal, ridge)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", choices=("demo", "pretrained"), default="pretrained")
    ap.add_argument("--settings", default="1e-2,1e-3")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--offspring", type=int, default=24)
    ap.add_argument("--cache", default="benchmarks/out/parents")
    ap.add_argument("--gradient-check", action="store_true")
    ap.add_argument("--refit", type=int, default=0, help="rounds of offspring-input LS")
    ap.add_argument("--refit-images", type=int, default=2048)
    ap.add_argument("--ridge", type=float, default=RIDGE, help="the refit's")
    args = ap.parse_args()
    torch.set_num_threads(2)
    net, data = build(args.pair, Path(args.cache))
    train, test = load_dataset(data, "train"), load_dataset(data, "test")
    fitted = Path(args.cache) / f"{args.pair}_ls2048.safetensors"
    if fitted.exists():
        net.stitches.load_state_dict(safetensors.torch.load_file(str(fitted)))
    else:
        train_stitches(net, train, downstream=0, progress=False, device="cpu")
        safetensors.torch.save_file(net.stitches.state_dict(), str(fitted))
    if args.gradient_check:
        return gradient_check(net, train)
    ls = {k: v.clone() for k, v in net.stitches.state_dict().items()}
    n = len(train)
    held_idx = list(range(n - 256, n))
    held = [x for x, _ in batches(train, [held_idx[i : i + 32] for i in range(0, 256, 32)])]
    ev = Evaluator(net, subset(test, 500, seed=0), 10, device="cpu")
    base = statistics.mean(ev.metrics(g)["accuracy"] for g in net.reference_genotypes[:2])
    draws = {p: sample_offspring(net, 60, p, 0)[: args.offspring] for p in (0.1, 0.25)}

    def scores() -> str:
        return " ".join(
            f"p={p}: {statistics.median(ev.metrics(g)['accuracy'] / base for g in gs):.3f}"
            for p, gs in draws.items()
        )

    print(f"{args.pair} pair, least squares: {scores()}", flush=True)
    if args.refit:
        print(f"held-out KL {stage.held_out_loss(net, held, 0):.3f}", flush=True)
        for r in range(args.refit):
            t = refit(net, train, args.refit_images, 100 + r, args.ridge)
            kl = stage.held_out_loss(net, held, 0)
            print(f"refit {r + 1}: {t:.0f} s; held-out KL {kl:.3f}; {scores()}", flush=True)
        return None
    for setting in args.settings.split(","):
        lr, *options = setting.split("/")
        w = next((o[1:] for o in options if o.startswith("w")), "0")
        p_range = next((o[1:] for o in options if o.startswith("p")), None)
        stage.P_RANGE = tuple(map(float, p_range.split("-"))) if p_range else P_RANGE
        net.stitches.load_state_dict(ls)
        rng = random.Random(0)
        stream = (
            next(iter(batches(train, [rng.sample(range(n - 256), 32)])))[0]
            for _ in range(args.steps)
        )
        if lr.startswith("pc"):
            m = next((o[1:] for o in options if o.startswith("m")), "0")
            opt = Preconditioned(net, train, float(lr[2:]), float(m))
            plain = stage.offspring_loss

            def recorded(*a, _opt=opt, _plain=plain, **k):
                loss = _plain(*a, **k)
                _opt.loss = float(loss.detach())
                return loss

            stage.offspring_loss = recorded
        else:
            opt = Warmup(net, float(lr), int(w or 0))
        run = stage.StageRun(args.steps, opt, progress=False)
        start = time.perf_counter()
        before = stage.held_out_loss(net, held, 0)
        stage.train_downstream(net, stream, run)
        after = stage.held_out_loss(net, held, 0)
        stage.offspring_loss = OFFSPRING_LOSS
        h, tenth = run.history, max(args.steps // 10, 1)
        curve = " ".join(
            f"{statistics.mean(h[i : i + tenth]):.2f}" for i in range(0, len(h), tenth)
        )
        print(
            f"lr {lr} warmup {w} p {stage.P_RANGE}: {time.perf_counter() - start:.0f} s; "
            f"training KL {curve}; "
            f"held-out KL {before:.3f} -> {after:.3f}; {scores()}",
            flush=True,
        )


if __name__ == "__main__":
    main()
