"""What a saved supernetwork was built under, checked when it is opened under other versions.

fx node names, their shapes and a parent's arithmetic depend on torch, torchvision and timm.
A folder records their versions, the shape of every matched node and each parent's output
on a fixed input (`record`). Opened under the same versions nothing more is checked (the
files' sha256 already are); under others the rebuilt parents must agree on all three, or
the folder is refused in one line naming what differs (`check`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import SupernetError
from ..graph import Graph, example_input
from ..versions import BUILD, changed, installed

SAMPLES = 256  # output values recorded per parent (evenly spaced over the flat output)
# Relative L2 error allowed between a parent's recorded and rebuilt output: other kernels
# move float32 results by ~1e-6 and TF32 by ~1e-3, a miswired or renamed layer by ~1.
TOLERANCE = 1e-2
MAX_SHAPES = 100_000


def _output(module: torch.nn.Module, input_shape: Sequence[int]) -> list[float]:
    """The parent's output on `example_input` (one image), `SAMPLES` values of it."""
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(example_input(input_shape, batch=1).to(device))
    finally:
        module.train(was)
    flat = torch.cat([torch.zeros(0), *(t.float().flatten().cpu() for t in _tensors(out))])
    if flat.numel() > SAMPLES:
        flat = flat[torch.linspace(0, flat.numel() - 1, SAMPLES).long()]
    return [float(f"{v:.7g}") for v in flat.tolist()]


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in a model's output (a tensor, or lists, tuples and dicts of them)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return [t for v in value for t in _tensors(v)]
    return []


def record(graphs: Sequence[Graph], matches: Sequence[tuple], input_shape: Sequence[int]) -> dict:
    """The versions, the matched nodes' shapes (batch left out) and the outputs to save."""
    parents = []
    for col, g in enumerate(graphs):
        names = sorted({m[col] for m in matches if m[col] is not None})
        shapes = {n: list(g.nodes[n].shape[1:]) for n in names if g.nodes[n].shape is not None}
        parents.append({"shapes": shapes, "output": _output(g.module, input_shape)})
    return {"versions": installed(BUILD), "parents": parents}


def validate(built: Any, n_parents: int, path: Path) -> None:
    """SupernetError naming `path` unless `built` is what `record` writes (or absent:
    folders of evostitch <= 0.1)."""
    if built is None:
        return
    ok = (
        isinstance(built, dict)
        and isinstance(built.get("versions"), dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in built["versions"].items())
        and isinstance(built.get("parents"), list)
        and len(built["parents"]) == n_parents
        and all(_parent_ok(p) for p in built["parents"])
    )
    if not ok:
        raise SupernetError(f"{path}: built must be the versions, shapes and outputs saved")


def _parent_ok(entry: Any) -> bool:
    if not isinstance(entry, dict):
        return False
    shapes, output = entry.get("shapes"), entry.get("output")
    return (
        isinstance(shapes, dict)
        and len(shapes) <= MAX_SHAPES
        and all(
            isinstance(s, list) and len(s) <= 8 and all(type(v) is int for v in s)
            for s in shapes.values()
        )
        and isinstance(output, list)
        and len(output) <= SAMPLES
        and all(type(v) in (int, float) and math.isfinite(v) for v in output)
    )


def check(
    built: dict | None,
    graphs: Sequence[Graph],
    sides: Sequence[str],
    input_shape: Sequence[int],
    where: Path,
) -> str | None:
    """None when the folder was built under the versions installed now (or recorded none);
    otherwise the one line saying the rebuilt parents agree with what was recorded.
    SupernetError, one line naming the versions and the first difference, if they do not."""
    if built is None:
        return None
    moved = changed(built["versions"], installed(BUILD))
    if not moved:
        return None
    versions = ", ".join(moved)
    for side, g, entry in zip(sides, graphs, built["parents"], strict=True):
        why = _difference(g, entry, input_shape)
        if why:
            raise SupernetError(
                f"{where} was built under other versions ({versions}) and parent "
                f"{side.upper()} no longer rebuilds the same: {why}; install the recorded "
                "versions or stitch the parents again"
            )
    return (
        f"{where} was built under other versions ({versions}): the rebuilt parents' node "
        "names, shapes and outputs agree with the recorded ones, so it opens as saved"
    )


def _difference(g: Graph, entry: dict, input_shape: Sequence[int]) -> str | None:
    """What differs between parent graph `g` and its record, or None."""
    for name, shape in entry["shapes"].items():
        node = g.nodes.get(name)
        if node is None or node.shape is None:
            return f"node {name} is gone"
        if list(node.shape[1:]) != shape:
            return f"node {name} has shape {list(node.shape[1:])}, recorded {shape}"
    now = torch.tensor(_output(g.module, input_shape))
    then = torch.tensor(entry["output"], dtype=torch.float32)
    if now.shape != then.shape:
        return f"its output has {now.numel()} recorded values, not {then.numel()}"
    error = float((now - then).norm() / then.norm().clamp_min(1e-12))
    if error > TOLERANCE:
        return f"its output on the recorded input differs (relative error {error:.3g})"
    return None
