"""Do the stitches hold? Random offspring scored as a fraction of their parents.

The method's promise is offspring that switch a few stitches on and keep most of the
parents' metric. `HoldCheck` draws offspring as a search starts them (each switch on with
probability p, any output choice), scores them with the parents on a few validation
images, once with the stitches as built (untrained) and once fitted, and `hold_figure`
turns both into the figure stored beside the supernetwork (``stitches_hold.json``)::

    {"split": "val", "images": 256, "samples": 16, "metric": "accuracy",
     "parents": [0.97, 0.95],
     "p": [{"p": 0.02, "trained": {"median": 0.99, "q1": 0.97, "q3": 1.0},
            "untrained": {"median": 0.37, ...}}, ...],
     "text": "..."}

Fractions are of the parents' mean metric on the same images.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from torch.utils.data import Dataset

from ..data import subset
from ..errors import EvostitchError
from ..files import write_text_atomic
from ..supernet import Supernet
from ..supernet.schema import read_json
from .evaluator import Evaluator

T = TypeVar("T")

HOLD_PS = (0.02, 0.1)
HOLD_SAMPLES = 16
HOLD_IMAGES = 256
HOLD_FILE = "stitches_hold.json"
MAX_HOLD_BYTES = 1 << 20  # a figure is a few hundred bytes per p


def sample_offspring(net: Supernet, n: int, p: float, seed: int) -> list[tuple[int, ...]]:
    """`n` canonical offspring: any output choice, each switch on with probability `p`
    (a switch with several sources then takes one of them uniformly)."""
    rng = random.Random(seed)
    spec = net.genotype_spec
    draws = [[rng.randrange(spec[0])] + [_draw(rng, p, c) for c in spec[1:]] for _ in range(n)]
    return [net.canonical(g) for g in draws]


def _draw(rng: random.Random, p: float, choices: int) -> int:
    """0, or with probability `p` one of the values 1..choices - 1."""
    if not rng.random() < p:
        return 0
    return 1 if choices == 2 else rng.randrange(1, choices)


class HoldCheck:
    """The same random offspring, scored whenever `measure` is called (before and after
    fitting the stitches)."""

    def __init__(
        self,
        evaluator: Evaluator,
        *,
        ps: Sequence[float] = HOLD_PS,
        samples: int = HOLD_SAMPLES,
        seed: int = 0,
    ) -> None:
        self.evaluator, self.samples = evaluator, samples
        net = evaluator.net
        self.genotypes = {p: sample_offspring(net, samples, p, seed + i) for i, p in enumerate(ps)}
        self.parents = net.reference_genotypes[:2]

    def measure(self) -> dict[str, Any]:
        """{"parents": [metric A, metric B], p: [fraction of the parents' mean, ...]}."""
        self.evaluator.net.eval()  # training may have left it in train mode
        unique = sorted({*self.parents, *(g for gs in self.genotypes.values() for g in gs)})
        name = self.evaluator.metric_name
        scores = self.evaluator.metrics_many(unique)
        metric = {g: m[name] for g, m in zip(unique, scores, strict=True)}
        parents = [metric[g] for g in self.parents]
        base = statistics.fmean(parents) or 1.0
        return {
            "parents": parents,
            **{p: [metric[g] / base for g in gs] for p, gs in self.genotypes.items()},
        }


def hold_evaluator(
    net: Supernet,
    dataset: Dataset,
    num_classes: int,
    *,
    images: int = HOLD_IMAGES,
    seed: int = 0,
    **options: Any,
) -> Evaluator:
    """An evaluator on a seeded subset of `images` samples, decoded in this process."""
    return Evaluator(net, subset(dataset, images, seed=seed), num_classes, workers=0, **options)


def measured(
    train: Callable[[], T], evaluator: Evaluator, *, samples: int = HOLD_SAMPLES, seed: int = 0
) -> tuple[T, dict[str, Any] | None]:
    """`train()`'s result and the figure of random offspring scored before and after it
    (None when `samples` is 0)."""
    if samples < 1:
        return train(), None
    check = HoldCheck(evaluator, samples=samples, seed=seed)
    before = check.measure()
    result = train()
    return result, hold_figure(
        check.measure(),
        before,
        metric=evaluator.metric_name,
        images=len(evaluator.dataset),
        samples=samples,
    )


def _quartiles(values: Sequence[float]) -> dict[str, float]:
    if len(values) == 1:
        return {"median": values[0], "q1": values[0], "q3": values[0]}
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": median, "q1": q1, "q3": q3}


def hold_figure(
    trained: dict[str, Any],
    untrained: dict[str, Any] | None,
    *,
    metric: str,
    images: int,
    samples: int,
    split: str = "val",
) -> dict[str, Any]:
    """The stored figure from two `HoldCheck.measure` results (untrained may be None)."""
    rows = []
    for p in (k for k in trained if k != "parents"):
        row: dict[str, Any] = {"p": p, "trained": _quartiles(trained[p])}
        if untrained is not None:
            row["untrained"] = _quartiles(untrained[p])
        rows.append(row)
    figure = {
        "split": split,
        "images": images,
        "samples": samples,
        "metric": metric,
        "parents": trained["parents"],
        "p": rows,
    }
    figure["text"] = hold_text(figure)
    return figure


def with_left_out(figure: dict[str, Any], left_out: int, stitches: int) -> dict[str, Any]:
    """The figure of offspring measured with `left_out` of `stitches` stitches left out
    (their switches read 0), its text saying so."""
    figure = {**figure, "left_out": [left_out, stitches]}
    return {**figure, "text": hold_text(figure)}


def hold_text(figure: dict[str, Any]) -> str:
    """One sentence: median fraction kept per p, trained against untrained, and how many
    stitches were left out of the trained offspring."""
    parts = []
    for row in figure["p"]:
        t = row["trained"]
        part = f"p={row['p']:g}: {t['median']:.3f} [{t['q1']:.3f}, {t['q3']:.3f}]"
        if "untrained" in row:
            part += f" (untrained {row['untrained']['median']:.3f})"
        parts.append(part)
    left = ""
    if figure.get("left_out"):
        n, of = figure["left_out"]
        left = f"; trained: with the {n} of {of} poor stitches left out"
    return (
        f"Random offspring keep a median of {'; '.join(parts)} of the parents' mean "
        f"{figure['metric']} ({figure['samples']} offspring per p, {figure['images']} "
        f"{figure['split']} images{left})."
    )


def save_hold_figure(figure: dict[str, Any], folder: str | Path) -> Path:
    """Write the figure as ``stitches_hold.json`` into a supernetwork folder (atomically:
    the old figure or the new one, never a part; a link there is replaced, not followed)."""
    path = Path(folder) / HOLD_FILE
    write_text_atomic(path, json.dumps(figure, indent=1))
    return path


def load_hold_figure(folder: str | Path) -> dict[str, Any] | None:
    """The stored figure of a supernetwork folder; None if absent, not a regular file
    (never opened: a FIFO would block), or not a figure as `hold_figure` makes it."""
    try:
        figure = read_json(Path(folder) / HOLD_FILE, MAX_HOLD_BYTES)
    except (EvostitchError, OSError):
        return None
    return figure if is_hold_figure(figure) else None


def _finite(value: Any, low: float = -math.inf) -> bool:
    """A finite number (not a bool) >= low."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return (isinstance(value, int) or math.isfinite(value)) and value >= low


def _quartiles_ok(value: Any) -> bool:
    return isinstance(value, dict) and all(_finite(value.get(k)) for k in ("median", "q1", "q3"))


def is_hold_figure(figure: Any) -> bool:
    """Whether `figure` has every field `hold_figure` writes, of its type and range."""
    if not isinstance(figure, dict) or not isinstance(figure.get("p"), list):
        return False
    rows_ok = all(
        isinstance(row, dict)
        and _finite(row.get("p"), 0)
        and _quartiles_ok(row.get("trained"))
        and ("untrained" not in row or _quartiles_ok(row["untrained"]))
        for row in figure["p"]
    )
    parents = figure.get("parents")
    return (
        rows_ok
        and all(isinstance(figure.get(k), str) for k in ("split", "metric", "text"))
        and all(
            isinstance(figure.get(k), int) and _finite(figure[k], 0) for k in ("images", "samples")
        )
        and isinstance(parents, list)
        and all(_finite(v) for v in parents)
    )
