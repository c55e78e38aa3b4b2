"""Peak CPU memory of stitch training and of evaluating one offspring (issue: Memory).

ResNet-50 x ResNeXt-50 (32x4d) supernetwork at 224x224, batch 32, random weights (memory
does not depend on them), random images. Every phase runs in a fresh subprocess: it
builds what it needs, warms the kernels up on a tiny network, then measures the peak
resident memory the phase adds: glibc's free heap is trimmed (malloc_trim) so the RSS
before the phase is live memory only, VmHWM is reset (`5` > /proc/self/clear_refs), and
the figure is VmHWM after the phase minus VmRSS before it. What exists before a phase
(parents, stitches and their weights, the input batch, the dataset) is not counted;
what the phase allocates is, whether torch or glibc keeps it afterwards or not.

- parent A / B: the parent alone (torchvision module), inference forward, no grad;
- stitches: each stitch in turn on a random source shaped like its input, MSE against a
  random target, backward (parameter gradients accumulate, as in training); the figure
  is the largest peak over the stitches, less that stitch's source and target;
- fit: `train_stitches`' default, the least-squares fit, on the batch (no gradient
  steps, no held-out images); goal: at most 1.5x (parent A + parent B + stitches), each
  measured as above;
- train: `train_stitches` for --steps gradient steps (no least-squares fit); the same goal;
- downstream: --steps steps of the downstream stage alone (no fit, no held-out images):
  every image its own offspring over both parents, the backward pass in micro-batches
  (`training.downstream.micro_batch`); the same goal; `downstream-whole` (info): the
  same with the whole batch in one backward pass, what micro-batches save;
- evaluate: `Evaluator.metrics` of one offspring on one batch: one crossover from A into
  B (past a quarter of A, the one running the fewest nodes; see `crossover`); goal:
  at most 1.2x the larger parent's forward;
- evaluate, p = 0.1 (info): a seeded offspring with each switch on with p = 0.1, which
  runs most of both parents: against the merged forward of both parents;
- information only: both parents in the supernetwork's merged order (no switch
  taken), parent B evaluated through the supernetwork, training without clean targets.
  Random parents may make the fit diverge: its peak is still reported. At small sizes
  fixed costs (weights copied to another layout, 16 MiB for a 2048x2048 stitch) dominate:
  the goals are meant for the full setting.

    python benchmarks/memory.py                              # full (~16 GiB peak, ~35 min)
    python benchmarks/memory.py --size 112 --batch 8         # quicker
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import random
import subprocess
import sys
import time

import torch
from torch import nn

from evostitch.data import ArrayDataset
from evostitch.errors import EvostitchError
from evostitch.evaluation import Evaluator
from evostitch.models import load_model
from evostitch.supernet import Executor, Supernet
from evostitch.training import downstream, train_stitches
from evostitch.training.downstream import micro_batch
from evostitch.training.fit import default_fit_memory

MIB = 2**20


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def reset_peak(trim: bool = True) -> int:
    """Trim free memory (`trim`), reset VmHWM; the RSS the phase starts from."""
    if trim:
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status("VmRSS")


def peak_since(rss: int) -> int:
    return _status("VmHWM") - rss


def warm_up() -> None:
    """Load and initialise the kernels the phases use, on a tiny network."""
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(True),
        nn.Conv2d(8, 8, 3, groups=4),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    out = net(torch.randn(2, 3, 16, 16))
    nn.functional.mse_loss(out, torch.randn_like(out)).backward()
    torch.optim.AdamW(net.parameters()).step()
    with torch.no_grad():
        net.eval()(torch.randn(2, 3, 16, 16)).softmax(1)


def data(args) -> ArrayDataset:
    gen = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch, 3, args.size, args.size, generator=gen)
    targets = torch.randint(0, 1000, (args.batch,), generator=gen)
    return ArrayDataset(images, targets, torch.arange(args.batch))


def crossover(net: Supernet) -> tuple[int, ...]:
    """Output B, one stitch from A into B taken: of the points past a quarter of A, the
    one whose offspring runs the fewest nodes (a point inside a residual block keeps B's
    skip branch, and so all of B, alive)."""
    n_a = sum(1 for k in net.structure.inputs if k[0] == "a")
    best = None
    for i, sw in enumerate(net.switches):
        if sw.side != "b":
            continue
        g = [net.output_choices.index("b")] + [0] * len(net.switches)
        g[i + 1] = 1
        raw = net.plan(g).raw
        ran_a = sum(k[0] == "a" for k in raw)
        if ran_a >= n_a / 4 and (best is None or len(raw) < best[0]):
            best = (len(raw), g)
    return net.canonical(best[1])


def genotype(net: Supernet, seed: int, p: float = 0.1) -> tuple[int, ...]:
    rng = random.Random(seed)
    return net.canonical([rng.randrange(2)] + [int(rng.random() < p) for _ in net.switches])


class ParentsOnly(Executor):
    """Every node of both parents in the merged order; no switch taken."""

    def switch(self, sw, on, own, source):
        return own


def run_phase(args) -> dict:
    """One phase in this (fresh) process: its peak and what it knows about it."""
    torch.manual_seed(args.seed)
    warm_up()
    shape = (3, args.size, args.size)
    if args.phase in ("a", "b"):
        model = load_model(args.a if args.phase == "a" else args.b)
        x = torch.randn(args.batch, *shape)
        rss = reset_peak()
        with torch.no_grad():
            model(x)
        return {"peak": peak_since(rss)}
    net = Supernet.build([args.a, args.b], shape)
    ds = data(args)
    info = {"stitches": len(net.switches)}
    if args.phase == "stitches":
        rss, peak = reset_peak(), 0
        for sw in net.switches:
            src, dst = (
                net.graphs[s][n].shape[1:] for s, n in ((sw.src[0], sw.source), (sw.side, sw.node))
            )
            inputs = [torch.randn(args.batch, *src), torch.randn(args.batch, *dst)]
            reset_peak(trim=False)  # VmHWM from here; RSS counts from the phase start
            loss = nn.functional.mse_loss(net.stitches[sw.stitch](inputs[0]), inputs[1])
            loss.backward()
            del loss
            peak = max(peak, peak_since(rss) - sum(t.nbytes for t in inputs))
        return {**info, "peak": peak}
    if args.phase == "merged":
        rss = reset_peak()
        with torch.no_grad():
            ParentsOnly(net).run(net.structure.full_plan(), ds.images)
        return {**info, "peak": peak_since(rss)}
    if args.phase.startswith("evaluate"):
        ev = Evaluator(net, ds, 1000, batch_size=args.batch, device="cpu")
        g = {
            "evaluate": crossover(net),
            "evaluate-mixed": genotype(net, args.seed),
            "evaluate-b": net.reference_genotypes[1],
        }[args.phase]
        rss = reset_peak()
        metrics = ev.metrics(g)
        plan = net.plan(g)
        return {
            **info,
            "peak": peak_since(rss),
            "output": net.output_choices[g[0]],
            "taken": len(plan.stitched),
            "nodes": [sum(k[0] == side for k in plan.raw) for side in "ab"],
            "gmacs": metrics["macs"] / 1e9,
        }
    params = sum(p.numel() * p.element_size() for p in net.stitches.parameters())
    targets = sum(math.prod(net.graphs[sw.side][sw.node].shape[1:]) for sw in net.switches)
    info.update(params=params, targets=targets * args.batch * 4, data=ds.images.nbytes)
    stage = args.phase.startswith("downstream")
    if stage:
        whole = args.phase == "downstream-whole"
        micro = args.micro or micro_batch(net, default_fit_memory(net))
        info["micro"] = args.batch if whole else micro
        downstream.micro_batch = lambda net, memory: info["micro"]
    rss = reset_peak()
    try:
        train_stitches(
            net,
            ds,
            fit_samples=args.batch if args.phase == "fit" else 0,
            steps=0 if args.phase == "fit" or stage else args.steps,
            downstream=args.steps if stage else 0,
            held_out=0,
            batch_size=args.batch,
            device="cpu",
            clean_targets=args.phase != "train-noclean",
            progress=False,
            seed=args.seed,
        )
    except EvostitchError as exc:  # random parents: the LS fit may diverge, the peak stands
        info["error"] = str(exc).split(";")[0]
    return {**info, "peak": peak_since(rss)}


PHASES = {  # phase: its row's label
    "a": "parent A forward, no grad",
    "b": "parent B forward, no grad",
    "stitches": "stitches forward+backward",
    "merged": "both parents, merged order (info)",
    "evaluate": "evaluate one offspring (one crossover)",
    "evaluate-mixed": "evaluate offspring, p = 0.1 (info)",
    "evaluate-b": "evaluate parent B via supernet (info)",
    "fit": "fit stitches (least squares)",
    "train": "train stitches (gradient steps)",
    "train-noclean": "train, clean_targets=False (info)",
    "downstream": "downstream stage, micro-batches",
    "downstream-whole": "downstream stage, whole batch (info)",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", default="torchvision:resnet50")
    ap.add_argument("--b", default="torchvision:resnext50_32x4d")
    ap.add_argument("--size", type=int, default=224, help="input height and width")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=2, help="training steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--micro",
        type=int,
        default=0,
        help="images per backward pass of the downstream stage (0: the library's choice)",
    )
    ap.add_argument("--only", nargs="+", choices=list(PHASES), default=list(PHASES))
    ap.add_argument("--phase", choices=list(PHASES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        print("RESULT " + json.dumps(run_phase(args)), flush=True)
        return
    print(
        f"{args.a} x {args.b} at {args.size}x{args.size}, batch {args.batch}, "
        f"{torch.get_num_threads()} threads; a fresh process per phase",
        flush=True,
    )
    keys = ("a", "b", "size", "batch", "steps", "seed", "micro")
    common = [f"--{k}={getattr(args, k)}" for k in keys]
    res = {}
    for phase in args.only:
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, __file__, f"--phase={phase}", *common], capture_output=True, text=True
        )
        if out.returncode:
            print(f"  {phase} failed:\n{out.stderr[-2000:]}", flush=True)
            continue
        res[phase] = json.loads(out.stdout.rsplit("RESULT ", 1)[1])
        print(
            f"  {phase}: {res[phase]['peak'] / MIB:.0f} MiB ({time.perf_counter() - t:.0f} s)",
            flush=True,
        )
    peak = {k: v["peak"] / MIB for k, v in res.items()}
    base = {}
    if {"a", "b", "stitches"} <= peak.keys():
        for k in ("fit", "train", "train-noclean", "downstream", "downstream-whole"):
            base[k] = (peak["a"] + peak["b"] + peak["stitches"], None if "-" in k else 1.5)
    if {"a", "b"} <= peak.keys():
        base["evaluate"] = (max(peak["a"], peak["b"]), 1.2)
        base["evaluate-b"] = (peak["b"], None)
    if "merged" in peak:
        base["evaluate-mixed"] = (peak["merged"], None)
    print(f"\n{'phase':36} {'peak MiB':>9} {'baseline MiB':>13} {'ratio':>6} {'goal':>5}  result")
    for k, p in peak.items():
        row = f"{PHASES[k]:36} {p:9.0f}"
        if k in base:
            b, goal = base[k]
            verdict = "info" if goal is None else ("PASS" if p <= goal * b else "FAIL")
            row += f" {b:13.0f} {p / b:6.2f} {f'{goal}x' if goal else '-':>5}  {verdict}"
        print(row)
    print(
        "baselines: train = A + B + stitches; evaluate = max(A, B); "
        "evaluate p = 0.1 = both parents merged"
    )
    for k in (k for k in ("downstream", "downstream-whole") if k in res):
        print(f"{PHASES[k]}: {res[k]['micro']} images per backward pass")
    for k in (k for k in res if "error" in res[k]):
        print(f"{k} stopped early: {res[k]['error']}")
    for k in ("evaluate", "evaluate-mixed"):
        if k in res:
            e = res[k]
            print(
                f"{PHASES[k]}: output {e['output']}, {e['taken']} stitches taken, runs "
                f"{e['nodes'][0]} nodes of A and {e['nodes'][1]} of B, "
                f"{e['gmacs']:.2f} GMACs per image"
            )
    t = next((res[k] for k in ("fit", "train", "train-noclean") if k in res), None)
    if t:
        print(
            f"training (MiB): storing every clean target would take {t['targets'] / MIB:.0f} "
            f"({t['stitches']} matched tensors of the batch; walked in step instead), AdamW state "
            f"{2 * t['params'] / MIB:.0f}, gradients {t['params'] / MIB:.0f} "
            f"(stitch weights {t['params'] / MIB:.0f}, not counted), "
            f"copy of the dataset {t['data'] / MIB:.0f}"
        )


if __name__ == "__main__":
    main()
