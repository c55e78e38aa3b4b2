"""Save and read a supernetwork: structure in JSON, weights in safetensors, no pickle.

A saved supernetwork is a folder with `supernet.json` (parent specs, input shape,
matching, cost table), `stitches.safetensors` and, for parents whose weights cannot be
rebuilt from their spec (no weights file), `parents.safetensors`. `supernet.json` is
written last, so a folder without it is an interrupted save. Reading checks every file
before anything is built: a damaged file gives one clear error, never a half-built
network. `Supernet.save` / `Supernet.load` are the entry points.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from .. import __version__
from ..errors import EvostitchError, SupernetError
from ..files import absolute, atomic_write, user_path
from ..graph import Graph, example_input, trace
from ..models import load_model, load_weights
from .plan import SIDES

if TYPE_CHECKING:
    from .module import Supernet

FORMAT = "evostitch.supernet"
VERSION = 1
JSON_NAME, STITCHES, PARENTS = "supernet.json", "stitches.safetensors", "parents.safetensors"
load_weights_into = load_weights


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def save(net: Supernet, folder: str | Path) -> Path:
    """Write `net` into `folder` (created if needed)."""
    folder = user_path(folder)
    for side, spec in zip(SIDES, net.specs, strict=True):
        if not spec:
            raise SupernetError(
                f"parent {side.upper()} was given as a module: save needs it named by a model "
                "spec (e.g. torchvision:resnet50 or package.module:factory)"
            )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / JSON_NAME).unlink(missing_ok=True)  # the folder is incomplete until it is back
    parents = []
    stored: dict[str, torch.Tensor] = {}
    for side, spec in zip(SIDES, net.specs, strict=True):
        entry = dict(spec)
        if spec.get("weights"):
            entry["sha256"] = _sha256(spec["weights"])
            entry["weights"] = _portable(spec["weights"], folder)
        else:
            stored.update({f"{side}.{k}": v for k, v in net.parents[side].state_dict().items()})
        parents.append(entry)
    atomic_write(folder / STITCHES, lambda p: save_file(_tensors(net.stitches.state_dict()), p))
    if stored:
        atomic_write(folder / PARENTS, lambda p: save_file(_tensors(stored), p))
    matching = net.matching
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "evostitch": __version__,
        "input_shape": list(net.input_shape),
        "leaf_modules": list(net.leaf_modules),
        "parents": parents,
        "matches": [list(m) for m in net.matches],
        "matching": {
            "total": getattr(matching, "total", None),
            "optimal": getattr(matching, "optimal", None),
            "seconds": getattr(matching, "seconds", None),
        },
        "task": net.task,
        "data": net.data,
        "genotype_spec": net.genotype_spec,
        "cost": net.cost_table.to_dict() if net.cost_table is not None else None,
    }
    text = json.dumps(meta, indent=1)
    atomic_write(folder / JSON_NAME, lambda p: Path(p).write_text(text))
    return folder


def _portable(weights: str, folder: Path) -> str:
    """Weights inside the folder are recorded relative to it, so the folder can move."""
    path = absolute(weights)
    try:
        return str(path.relative_to(folder.resolve()))
    except ValueError:
        return str(path)


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SupernetError(f"{path} is damaged or truncated ({first})") from exc


@dataclass
class Saved:
    """What a saved folder holds, checked and with both parents traced."""

    folder: Path
    graphs: tuple[Graph, Graph]
    matches: list[tuple[str, str, float]]
    specs: list[dict[str, Any]]
    stitches: dict[str, torch.Tensor]
    input_shape: tuple[int, ...]
    leaf_modules: list[str]
    matching: dict | None
    data: str | None
    cost: Any


def read(folder: str | Path) -> Saved:
    """Read and check a folder written by `save`; rebuild and trace its parents."""
    folder = user_path(folder)
    meta_path = folder / JSON_NAME
    if not meta_path.is_file():
        raise SupernetError(f"{folder} is not a saved supernetwork (no {JSON_NAME})")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SupernetError(f"{meta_path} is damaged: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SupernetError(f"{meta_path} is not an evostitch supernetwork file")
    if meta.get("version") != VERSION:
        raise SupernetError(f"{meta_path} has format version {meta.get('version')}, not {VERSION}")
    try:
        stitches = _read_tensors(folder / STITCHES)
        stored = {}
        if any(not p.get("weights") for p in meta["parents"]):
            stored = _read_tensors(folder / PARENTS)
        models = [
            _parent(folder, side, entry, stored)
            for side, entry in zip(SIDES, meta["parents"], strict=True)
        ]
        example = example_input(meta["input_shape"])
        graphs = tuple(trace(m, example, meta["leaf_modules"]) for m in models)
        for side, g, col in zip(SIDES, graphs, (0, 1), strict=True):
            missing = [m[col] for m in meta["matches"] if m[col] not in g.nodes]
            if missing:
                raise SupernetError(
                    f"parent {side.upper()} no longer traces to the saved graph "
                    f"(node {missing[0]} is gone): was the model or library changed?"
                )
        specs = [
            {"spec": p["spec"], "weights": str(folder / p["weights"]) if p.get("weights") else None}
            for p in meta["parents"]
        ]
        return Saved(
            folder=folder,
            graphs=graphs,
            matches=[tuple(m) for m in meta["matches"]],
            specs=specs,
            stitches=stitches,
            input_shape=tuple(meta["input_shape"]),
            leaf_modules=list(meta["leaf_modules"]),
            matching=meta.get("matching"),
            data=meta.get("data"),
            cost=meta.get("cost"),
        )
    except EvostitchError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise SupernetError(f"{meta_path} is damaged: {type(exc).__name__}: {exc}") from exc


def _parent(folder: Path, side: str, entry: dict, stored: dict[str, torch.Tensor]):
    """Parent `side` rebuilt from its spec, with its weights file checked or stored weights."""
    weights = entry.get("weights")
    if weights and not Path(weights).is_absolute():
        weights = str(folder / weights)
    if weights:
        if not Path(weights).is_file():
            raise SupernetError(f"parent {side.upper()} weights {weights} are missing")
        if _sha256(weights) != entry.get("sha256"):
            raise SupernetError(f"parent {side.upper()} weights {weights} have changed")
    model = load_model(entry["spec"], weights)
    if not weights:
        prefix = f"{side}."
        own = {k[len(prefix) :]: v for k, v in stored.items() if k.startswith(prefix)}
        load_weights(model, own, entry["spec"])
    return model
