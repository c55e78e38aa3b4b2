"""Behaviour fingerprints, to show a refactor changed nothing (issue 38): run at two
commits and compare the lines.

Each line is a check's name and a SHA-256 of everything it saw (with a readable sum):
- `asks/<problem>/<algorithm>`: the first 600 genotypes each algorithm asks on the
  benchmark problems (onemax-100, trap5-50, lotz-16; seed 0, population 32), each told
  its objectives at once;
- `supernet/<parents>`: the outputs and costs of 30 seeded offspring of untrained demo
  parents (two parents: pairs; three: groups), seed 0;
- `search/<algorithm>`: `evostitch.api.stitch` on the bundled digits (256 images fitted,
  no downstream stage, no hold check) and `evostitch.api.search` for 40 evaluations; the
  stored evaluations in order (genotype, objectives).

    git worktree add /tmp/before <commit> && cp benchmarks/trajectory.py /tmp/before/benchmarks
    (cd /tmp/before && PYTHONPATH=src $VENV/bin/python benchmarks/trajectory.py) > before.txt
    .venv/bin/python benchmarks/trajectory.py > after.txt && diff before.txt after.txt

(`PYTHONPATH=src`: the old commit's package, with the same venv.) One thread, so float
sums are the same from run to run on one machine.
"""

from __future__ import annotations

import hashlib
import random
import tempfile
from pathlib import Path

import torch

from evostitch import api
from evostitch.evolution import problems
from evostitch.evolution.algorithms import make_algorithm
from evostitch.supernet import Supernet

ASKS = 600
ALGORITHMS = ("rs", "ga", "gomea", "lk-gomea", "nsga2")


def line(name: str, items: list) -> str:
    digest = hashlib.sha256(repr(items).encode()).hexdigest()[:16]
    total = sum(float(v) for item in items for v in _numbers(item))
    return f"{name:32} {digest}  sum {total:.6f}"


def _numbers(item):
    if isinstance(item, int | float):
        yield item
    elif isinstance(item, list | tuple):
        for v in item:
            yield from _numbers(v)


def asks() -> list[str]:
    cases = {
        "onemax-100": problems.onemax(100),
        "trap5-50": problems.trap(50),
        "lotz-16": problems.lotz(16),
    }
    out = []
    for name, problem in cases.items():
        for algo in ALGORITHMS:
            alg = make_algorithm(algo, problem, 0, pop_size=32, p_stitch=None)
            seen = []
            for _ in range(ASKS):
                c = alg.ask()
                seen.append(tuple(c.genotype))
                alg.tell(c.ticket, problem.evaluate(c.genotype))
            out.append(line(f"asks/{name}/{algo}", seen))
    return out


def supernets() -> list[str]:
    out = []
    pair = ("resnet_like", "mobilenet_like")
    for parents in (pair, (*pair, "resnet_like")):
        torch.manual_seed(0)
        specs = [f"demo:{p}" for p in parents]
        net = Supernet.build(specs, (1, 8, 8))
        x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
        net.profile(x[:1])
        rng, seen = random.Random(0), []
        for _ in range(30):
            g = [rng.randrange(c) if rng.random() < 0.2 or i == 0 else 0
                 for i, c in enumerate(net.genotype_spec)]  # fmt: skip
            with torch.no_grad():
                y = net(x, g)
            cost = net.cost(g)
            seen.append((net.canonical(g), y.flatten().tolist(), sorted(cost.items())))
        out.append(line(f"supernet/{len(parents)} parents", seen))
    return out


def searches() -> list[str]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "supernet"
        torch.manual_seed(0)
        api.stitch(
            ["demo:resnet_like", "demo:mobilenet_like"], (1, 8, 8), data="digits", out=folder,
            fit_samples=256, downstream=0, hold_samples=0, progress=False,
        )  # fmt: skip
        for algo in ("nsga2", "ga", "gomea"):
            run = api.search(
                folder, out=Path(tmp) / algo, algorithm=algo, budget=40, population=8,
                seed=0, progress=False,
            )  # fmt: skip
            seen = [(tuple(r.genotype), tuple(r.objectives)) for r in run.records]
            out.append(line(f"search/{algo}", seen))
    return out


def main() -> None:
    torch.set_num_threads(1)
    for text in (*asks(), *supernets(), *searches()):
        print(text, flush=True)


if __name__ == "__main__":
    main()
