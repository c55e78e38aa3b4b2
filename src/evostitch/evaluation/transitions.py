"""The transition map: for every matched point and direction, the offspring that crosses
there once (the source parent up to the point, the stitch, the other parent from there
to its output), scored as a fraction of the lower of the two parents.

It says where the parents can be joined at all before any search: a point whose crossing
keeps little of the parents is one the search will rarely use. Stored beside the
supernetwork as ``transitions.json``::

    {"split": "val", "images": 256, "metric": "accuracy", "parents": {"a": 0.97, "b": 0.91},
     "points": [{"from": "a:layer1_0", "to": "b:stage1_1", "stitch": "ab3",
                 "genotype": [1, 0, ...], "score": 0.90, "fraction": 0.99}, ...],
     "text": "..."}
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from ..errors import EvostitchError
from ..files import write_text_atomic
from ..supernet import Supernet, Switch
from ..supernet.schema import read_json
from .evaluator import Evaluator

TRANSITIONS_FILE = "transitions.json"
MAX_TRANSITIONS_BYTES = 8 << 20  # about 200 bytes a point
# A crossing below this fraction of the lower parent is poor: named, and its stitch left
# out of every offspring by `evostitch stitch` (0.9 before stop 46; 0.98 lifts random
# offspring with many stitches: docs/METHOD.md section 4).
POOR = 0.98


def crossings(net: Supernet) -> list[tuple[Switch, tuple[int, ...]]]:
    """Every switch with the canonical offspring that takes it and no other stitch: the
    output of the side the stitch writes into (switches of a side that is not an output
    choice, and those no single-stitch offspring reaches, are left out)."""
    found = []
    zeros = [0] * (len(net.genotype_spec) - 1)
    for sw in net.switches:
        if sw.side not in net.output_choices:
            continue
        g = [net.output_choices.index(sw.side), *zeros]
        g[sw.index] = sw.value
        g = net.canonical(g)
        if [s.stitch for s in net.plan(g).stitched] == [sw.stitch]:
            found.append((sw, g))
    return found


def transition_map(net: Supernet, evaluator: Evaluator, split: str = "val") -> dict[str, Any]:
    """Score every single crossing and both parents with `evaluator`."""
    net.eval()
    name, sides = evaluator.metric_name, [s for s in net.sides if s in net.output_choices]
    found = crossings(net)
    refs = {s: net.reference_genotypes[net.output_choices.index(s)] for s in sides}
    genotypes = sorted({*refs.values(), *(g for _, g in found)})
    scores = dict(zip(genotypes, (m[name] for m in evaluator.metrics_many(genotypes)), strict=True))
    parents = {s: scores[g] for s, g in refs.items()}
    points = []
    for sw, g in found:
        source = sw.source_side or next(s for s in sides if s != sw.side)
        lower = min(parents[sw.side], parents.get(source, parents[sw.side]))
        points.append(
            {
                "from": f"{source}:{sw.source}",
                "to": f"{sw.side}:{sw.node}",
                "stitch": sw.stitch,
                "genotype": list(g),
                "score": scores[g],
                "fraction": scores[g] / lower if lower else 0.0,
            }
        )
    figure = {
        "split": split,
        "images": len(evaluator.dataset),
        "metric": name,
        "parents": parents,
        "points": points,
    }
    figure["text"] = transition_text(figure)
    return figure


def transition_text(figure: dict[str, Any], worst: int = 3) -> str:
    """One sentence: how many single crossings keep at least `POOR` of the lower parent,
    their median, and the worst by name."""
    points = figure["points"]
    if not points:
        return "Transition map: no single crossing to score."
    fractions = [p["fraction"] for p in points]
    ranked = sorted(points, key=lambda p: p["fraction"])[:worst]
    names = ", ".join(f"{p['from']} -> {p['to']} {p['fraction']:.2f}" for p in ranked)
    return (
        f"Transition map: {sum(f >= POOR for f in fractions)} of {len(points)} single "
        f"crossings keep at least {POOR:g} of the lower parent's {figure['metric']} (median "
        f"{statistics.median(fractions):.3f}; {figure['images']} {figure['split']} images); "
        f"worst {names}."
    )


def save_transitions(figure: dict[str, Any], folder: str | Path) -> Path:
    """Write the map into a supernetwork folder (atomically; a link there is replaced)."""
    path = Path(folder) / TRANSITIONS_FILE
    write_text_atomic(path, json.dumps(figure, indent=1))
    return path


def load_transitions(folder: str | Path) -> dict[str, Any] | None:
    """The stored map of a supernetwork folder; None if absent, not a regular file, or
    not a map as `transition_map` makes it. Its text is made again from its points."""
    try:
        figure = read_json(Path(folder) / TRANSITIONS_FILE, MAX_TRANSITIONS_BYTES)
    except (EvostitchError, OSError):
        return None
    if not is_transition_map(figure):
        return None
    return {**figure, "text": transition_text(figure)}


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _point_ok(point: Any) -> bool:
    return (
        isinstance(point, dict)
        and all(isinstance(point.get(k), str) for k in ("from", "to", "stitch"))
        and all(_number(point.get(k)) for k in ("score", "fraction"))
        and isinstance(point.get("genotype"), list)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in point["genotype"])
    )


def is_transition_map(figure: Any) -> bool:
    """Whether `figure` has every field `transition_map` writes, of its type."""
    if not isinstance(figure, dict):
        return False
    parents, points = figure.get("parents"), figure.get("points")
    return (
        all(isinstance(figure.get(k), str) for k in ("split", "metric", "text"))
        and isinstance(figure.get("images"), int)
        and not isinstance(figure.get("images"), bool)
        and isinstance(parents, dict)
        and all(isinstance(k, str) and _number(v) for k, v in parents.items())
        and isinstance(points, list)
        and all(_point_ok(p) for p in points)
    )
