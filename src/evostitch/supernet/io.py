"""Save and read a supernetwork: structure in JSON, weights in safetensors, no pickle.

A saved supernetwork is a folder with `supernet.json` (parent specs, input shape,
matching, cost table, the sha256 of each weights file), `stitches.safetensors` and
`parents.safetensors` (every parent's weights, whatever they were built from: a later
load, a Ray worker or another machine never downloads them again nor needs the file
they came from). `supernet.json` is written last, so a folder without it is an
interrupted save. Reading checks every file before anything is built: a damaged file
gives one clear error, never a half-built network. Parents are rebuilt from their
architecture's spec; one that names code (`package.module:factory`) only with
`trust_code`. `Supernet.save` / `Supernet.load` are the entry points.

K parents (sides "a", "b", "c", ...): `parents` lists K entries in side order, each row
of `matches` is a group, K node names (null where a parent has none) and its weight;
weights of parent `s` are stored as `s.<name>`. For K = 2 this is the two-parent
format: pairs `[a, b, weight]`.
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
from ..models import architecture_spec, load_model, load_weights
from .plan import side_names

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
    for side, spec in zip(net.sides, net.specs, strict=True):
        if not spec:
            raise SupernetError(
                f"parent {side.upper()} was given as a module: save needs it named by a model "
                "spec (e.g. torchvision:resnet50 or package.module:factory)"
            )
    for name, value in net.stitches.state_dict().items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise SupernetError(
                f"stitch weights {name} are not finite (a diverged training?): not saved"
            )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / JSON_NAME).unlink(missing_ok=True)  # the folder is incomplete until it is back
    parents = []
    stored: dict[str, torch.Tensor] = {}
    for side, spec in zip(net.sides, net.specs, strict=True):
        entry = {k: v for k, v in spec.items() if k in ("spec", "architecture", "weights")}
        source = spec.get("weights")
        if source and Path(source).is_file():  # where the weights came from, for the record
            entry["weights"] = str(absolute(source))
            entry["weights_sha256"] = _sha256(source)
        elif spec.get("weights_sha256"):
            entry["weights_sha256"] = spec["weights_sha256"]
        stored.update({f"{side}.{k}": v for k, v in net.parents[side].state_dict().items()})
        parents.append(entry)
    atomic_write(folder / STITCHES, lambda p: save_file(_tensors(net.stitches.state_dict()), p))
    atomic_write(folder / PARENTS, lambda p: save_file(_tensors(stored), p))
    matching = net.matching
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "evostitch": __version__,
        "input_shape": list(net.input_shape),
        "leaf_modules": list(net.leaf_modules),
        "parents": parents,
        "sha256": {name: _sha256(folder / name) for name in (STITCHES, PARENTS)},
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


def _read_tensors(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    if sha256 is not None and path.is_file() and _sha256(path) != sha256:
        raise SupernetError(f"{path} is damaged or truncated (not the file saved: sha256 differs)")
    try:
        return load_file(str(path))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SupernetError(f"{path} is damaged or truncated ({first})") from exc


@dataclass
class Saved:
    """What a saved folder holds, checked and with every parent traced."""

    folder: Path
    graphs: tuple[Graph, ...]
    matches: list[tuple]
    specs: list[dict[str, Any]]
    stitches: dict[str, torch.Tensor]
    input_shape: tuple[int, ...]
    leaf_modules: list[str]
    matching: dict | None
    data: str | None
    cost: Any


def read(folder: str | Path, *, trust_code: bool = False) -> Saved:
    """Read and check a folder written by `save`; rebuild and trace its parents (a parent
    whose spec names code only with `trust_code`)."""
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
        hashes = meta.get("sha256") or {}
        stitches = _read_tensors(folder / STITCHES, hashes.get(STITCHES))
        stored = {}
        if (folder / PARENTS).exists() or any(not p.get("weights") for p in meta["parents"]):
            stored = _read_tensors(folder / PARENTS, hashes.get(PARENTS))
        sides = side_names(len(meta["parents"]))
        models = [
            _parent(folder, side, entry, stored, trust_code)
            for side, entry in zip(sides, meta["parents"], strict=True)
        ]
        example = example_input(meta["input_shape"])
        graphs = tuple(trace(m, example, meta["leaf_modules"]) for m in models)
        for col, (side, g) in enumerate(zip(sides, graphs, strict=True)):
            missing = [
                m[col] for m in meta["matches"] if m[col] is not None and m[col] not in g.nodes
            ]
            if missing:
                raise SupernetError(
                    f"parent {side.upper()} no longer traces to the saved graph "
                    f"(node {missing[0]} is gone): was the model or library changed?"
                )
        specs = [_provenance(folder, p) for p in meta["parents"]]
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


def _provenance(folder: Path, entry: dict) -> dict[str, Any]:
    """A parent's spec, architecture and the weights file it came from (with its sha256)."""
    out = {k: entry[k] for k in ("spec", "architecture", "weights_sha256") if k in entry}
    weights = entry.get("weights")
    out["weights"] = str(folder / weights) if weights else None  # absolute stays absolute
    if "sha256" in entry:  # evostitch <= 0.1
        out["weights_sha256"] = entry["sha256"]
    return out


def _parent(
    folder: Path, side: str, entry: dict, stored: dict[str, torch.Tensor], trust_code: bool
) -> torch.nn.Module:
    """Parent `side`: its architecture rebuilt, its weights from the folder (or, in folders
    of evostitch <= 0.1 that did not store them, from the file recorded with its sha256)."""
    spec = entry.get("architecture") or architecture_spec(entry["spec"])
    prefix = f"{side}."
    own = {k[len(prefix) :]: v for k, v in stored.items() if k.startswith(prefix)}
    if own:
        model = load_model(spec, trust_code=trust_code)
        load_weights(model, own, entry["spec"])
        return model
    weights = entry.get("weights")
    if not weights:
        raise SupernetError(f"{folder} holds no weights for parent {side.upper()}")
    if not Path(weights).is_absolute():
        weights = str(folder / weights)
    if not Path(weights).is_file():
        raise SupernetError(f"parent {side.upper()} weights {weights} are missing")
    if _sha256(weights) != entry.get("sha256"):
        raise SupernetError(f"parent {side.upper()} weights {weights} have changed")
    return load_model(spec, weights, trust_code=trust_code)
