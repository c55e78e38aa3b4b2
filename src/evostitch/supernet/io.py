"""Save and read a supernetwork: structure in JSON, weights in safetensors, no pickle.

A saved supernetwork is a folder with `supernet.json` (parent specs, input shape,
matching, cost table, the sha256 of each weights file), `stitches.safetensors` and
`parents.safetensors` (every parent's weights, whatever they were built from: a later
load, a Ray worker or another machine never downloads them again nor needs the file
they came from). `supernet.json` is written last, so a folder without it is an
interrupted save. Parents are rebuilt from their architecture's spec; one that names
code (`package.module:factory`) only with `trust_code`. `Supernet.save` /
`Supernet.load` are the entry points: `save` takes the network's parts (structure,
specs, modules and a `Record`), `read` returns them (`Saved`) for `Supernet.load` to
build from.

Reading trusts nothing in the folder (it may come from anyone): every file must be a
regular file (a FIFO or a device would hang the reader); `supernet.json` is checked
field by field against what `save` writes (types, ranges, lengths; an input shape
against the memory tracing it would take) before anything is built; each parent is
first built on the meta device (no memory) and its stored tensors' names, dtypes and
shapes compared with it from the file's header, before a byte is loaded; stored
tensors holding NaN or infinities are refused. Any failure is one SupernetError line
naming the file and the field, never a half-built network.

K parents (sides "a", "b", "c", ...): `parents` lists K entries in side order, each row
of `matches` is a group, K node names (null where a parent has none) and its weight;
weights of parent `s` are stored as `s.<name>`. For K = 2 this is the two-parent
format: pairs `[a, b, weight]`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .. import __version__
from ..errors import EvostitchError, ModelError, SupernetError
from ..files import absolute, atomic_write, user_path
from ..graph import Graph, example_input, trace
from ..models import architecture_spec, load_model, load_weights, names_code
from ..models.specs import model_layout
from ..models.weights import Layout, layout, layout_mismatch, non_finite
from . import built
from .plan import Structure, side_names
from .schema import FORMAT, VERSION, available_memory, check_meta, read_json, readable_file, show

JSON_NAME, STITCHES, PARENTS = "supernet.json", "stitches.safetensors", "parents.safetensors"
log = logging.getLogger("evostitch")


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


@dataclass(frozen=True)
class Record:
    """What supernet.json holds beside the structure and the parents' specs: the input
    shape, leaf modules, matching figures, training data, left-out stitches and the
    cost table's `to_dict()` (None before profiling)."""

    input_shape: tuple[int, ...]
    leaf_modules: list[str]
    matching: dict[str, Any]  # the matching's total, optimal and seconds
    data: str | None
    left_out: list[str]
    cost: dict | None


def save(
    folder: str | Path,
    structure: Structure,
    specs: Sequence[dict | None],
    parents: Mapping[str, nn.Module],
    stitches: nn.Module,
    record: Record,
) -> Path:
    """Write a supernetwork into `folder` (created if needed): its structure, per side
    its parent's spec and module, its stitches and what `record` holds."""
    folder = user_path(folder)
    sides = structure.sides
    for side, spec in zip(sides, specs, strict=True):
        if not spec:
            raise SupernetError(
                f"parent {side.upper()} was given as a module: save needs it named by a model "
                "spec (e.g. torchvision:resnet50 or package.module:factory)"
            )
    for name, value in stitches.state_dict().items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise SupernetError(
                f"stitch weights {name} are not finite (a diverged training?): not saved"
            )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / JSON_NAME).unlink(missing_ok=True)  # the folder is incomplete until it is back
    entries = []
    stored: dict[str, torch.Tensor] = {}
    for side, spec in zip(sides, specs, strict=True):
        entry = {k: v for k, v in spec.items() if k in ("spec", "architecture", "weights")}
        source = spec.get("weights")
        if source and Path(source).is_file():  # where the weights came from, for the record
            entry["weights"] = str(absolute(source))
            entry["weights_sha256"] = _sha256(source)
        elif spec.get("weights_sha256"):
            entry["weights_sha256"] = spec["weights_sha256"]
        stored.update({f"{side}.{k}": v for k, v in parents[side].state_dict().items()})
        entries.append(entry)
    atomic_write(folder / STITCHES, lambda p: save_file(_tensors(stitches.state_dict()), p))
    atomic_write(folder / PARENTS, lambda p: save_file(_tensors(stored), p))
    matching = record.matching
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "evostitch": __version__,
        "input_shape": list(record.input_shape),
        "leaf_modules": list(record.leaf_modules),
        "parents": entries,
        "sha256": {name: _sha256(folder / name) for name in (STITCHES, PARENTS)},
        "matches": [list(m) for m in structure.matches],
        "matching": {name: matching.get(name) for name in ("total", "optimal", "seconds")},
        "task": structure.task,
        "data": record.data,
        "left_out": sorted(record.left_out),
        "genotype_spec": structure.genotype_spec,
        "cost": record.cost,
        "built": built.record(
            [structure.graphs[s] for s in sides], structure.matches, record.input_shape
        ),
    }
    text = json.dumps(meta, indent=1)
    atomic_write(folder / JSON_NAME, lambda p: Path(p).write_text(text))
    return folder


def _checked_file(path: Path, sha256: str | None) -> Path:
    """A regular file with the sha256 recorded for it (when one was)."""
    readable_file(path)
    try:
        digest = _sha256(path) if sha256 is not None else None
    except OSError as exc:
        raise SupernetError(f"cannot read {path}: {exc.strerror}") from None
    if digest != sha256:
        raise SupernetError(f"{path} is damaged or truncated (not the file saved: sha256 differs)")
    return path


def _header(path: Path) -> Layout:
    """The layout of a safetensors file, from its header alone (nothing loaded)."""
    try:
        with safe_open(str(path), "pt") as f:
            return {
                k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape()))
                for k in f.keys()  # noqa: SIM118 (a safe_open handle is no dict)
            }
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SupernetError(f"{path} is damaged or truncated ({first})") from None


def _load(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checked file; SupernetError if one holds NaN or infinities."""
    try:
        tensors = load_file(str(path))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SupernetError(f"{path} is damaged or truncated ({first})") from None
    bad = non_finite(tensors)
    if bad:
        raise SupernetError(f"{path}: tensor {bad} holds NaN or infinite values")
    return tensors


def _fits(nbytes: int, what: str, path: Path) -> None:
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise SupernetError(
            f"{path}: {what} take {nbytes / 2**30:.1f} GiB, more than the "
            f"{avail / 2**30:.1f} GiB of memory available"
        )


def load_stitches(stitches: nn.Module, path: Path) -> None:
    """Load the stitches from their checked file: the same names, dtypes and shapes as
    the supernetwork's (compared before loading), all finite."""
    why = layout_mismatch(layout(stitches.state_dict()), _header(path), exact_dtype=True)
    if why:
        raise SupernetError(f"{path} does not fit the supernetwork's stitches: {why}")
    stitches.load_state_dict(_load(path))


@dataclass
class Saved:
    """What a saved folder holds, checked and with every parent traced (the stitches'
    file checked against its sha256, loaded by `load_stitches` once they are built);
    `record.matching` is the saved figures' dict, `record.cost` the saved table's."""

    folder: Path
    graphs: tuple[Graph, ...]
    matches: list[tuple]
    specs: list[dict[str, Any]]
    stitches: Path
    record: Record


def read(folder: str | Path, *, trust_code: bool = False) -> Saved:
    """Read and check a folder written by `save`; rebuild and trace its parents (a parent
    whose spec names code only with `trust_code`)."""
    folder = user_path(folder)
    meta_path = folder / JSON_NAME
    if not os.path.lexists(meta_path):
        raise SupernetError(f"{folder} is not a saved supernetwork (no {JSON_NAME})")
    meta = read_json(meta_path)
    check_meta(meta, meta_path)
    built.validate(meta.get("built"), len(meta["parents"]), meta_path)
    try:
        return _read_checked(folder, meta, trust_code)
    except EvostitchError:
        raise
    except OSError as exc:  # a file of the folder we may not read
        raise SupernetError(f"cannot read {exc.filename or folder}: {exc.strerror}") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # what no check foresaw
        why = (str(exc).strip().splitlines() or [""])[0][:300]
        raise SupernetError(f"{meta_path} is damaged: {type(exc).__name__}: {why}") from exc


def _read_checked(folder: Path, meta: dict, trust_code: bool) -> Saved:
    """`read` of a folder whose supernet.json passed `check_meta`."""
    sides = side_names(len(meta["parents"]))
    for side, entry in zip(sides, meta["parents"], strict=True):
        if not trust_code and names_code(_architecture(entry)):  # before reading any more
            raise ModelError(
                f"{folder / JSON_NAME}: parent {side.upper()} ({show(entry['spec'])}) names "
                "code that runs only if you trust where it came from (--trust-code, "
                "trust_code=True)"
            )
    hashes = meta.get("sha256") or {}
    stitches = _checked_file(folder / STITCHES, hashes.get(STITCHES))
    stored: dict[str, dict[str, torch.Tensor]] = {}
    if os.path.lexists(folder / PARENTS) or any(not p.get("weights") for p in meta["parents"]):
        path = _checked_file(folder / PARENTS, hashes.get(PARENTS))
        stored = _stored_parents(path, meta["parents"], sides, trust_code)
    models = [
        _parent(folder, side, entry, stored.get(side, {}), trust_code)
        for side, entry in zip(sides, meta["parents"], strict=True)
    ]
    example = example_input(meta["input_shape"])
    graphs = tuple(trace(m, example, meta["leaf_modules"]) for m in models)
    agree = built.check(meta.get("built"), graphs, sides, meta["input_shape"], folder)
    if agree:
        log.warning(agree)
    for col, (side, g) in enumerate(zip(sides, graphs, strict=True)):
        missing = [m[col] for m in meta["matches"] if m[col] is not None and m[col] not in g.nodes]
        if missing:
            raise SupernetError(
                f"{folder / JSON_NAME}: parent {side.upper()} no longer traces to the saved "
                f"graph (node {show(missing[0])} is gone): was the model or library changed?"
            )
    return Saved(
        folder=folder,
        graphs=graphs,
        matches=[tuple(m) for m in meta["matches"]],
        specs=[_provenance(folder, p) for p in meta["parents"]],
        stitches=stitches,
        record=Record(
            input_shape=tuple(meta["input_shape"]),
            leaf_modules=list(meta["leaf_modules"]),
            matching=dict(meta["matching"]) if isinstance(meta.get("matching"), dict) else {},
            data=meta.get("data"),
            left_out=_left_out(folder, meta.get("left_out", [])),
            cost=meta.get("cost"),
        ),
    )


def _left_out(folder: Path, value: Any) -> list[str]:
    """The saved left-out stitches (a list of names; none in older folders)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SupernetError(f"{folder} is damaged: its left_out is not a list of stitch names")
    return value


def _stored_parents(
    path: Path, parents: list[dict], sides: tuple[str, ...], trust_code: bool
) -> dict[str, dict[str, torch.Tensor]]:
    """Per side, the parent's tensors from parents.safetensors: first their names,
    dtypes and shapes against the architecture built on the meta device (so a crafted
    spec or file takes no memory), then their values, all finite."""
    header = _header(path)
    stray = [k for k in header if not any(k.startswith(f"{side}.") for side in sides)]
    if stray:
        raise SupernetError(f"{path}: tensor {stray[0]} belongs to no parent")
    nbytes = 0
    for side, entry in zip(sides, parents, strict=True):
        prefix = f"{side}."
        own = {k[len(prefix) :]: v for k, v in header.items() if k.startswith(prefix)}
        if not own:
            continue  # evostitch <= 0.1: the weights file recorded with the parent
        expected = model_layout(_architecture(entry), trust_code=trust_code)
        why = expected is not None and layout_mismatch(expected, own, exact_dtype=True)
        if why:
            raise SupernetError(f"{path}: parent {side.upper()} ({entry['spec']}): {why}")
        nbytes += sum(_nbytes(dtype, shape) for dtype, shape in own.values())
    _fits(2 * nbytes, "the parents' weights (as read, then as built)", path)
    tensors = _load(path)
    return {
        side: {k[len(side) + 1 :]: v for k, v in tensors.items() if k.startswith(f"{side}.")}
        for side in sides
    }


def _nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    size = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2, "I16": 2}.get(dtype, 1)
    return size * math.prod(shape)


def _architecture(entry: dict) -> str:
    """The spec a parent is rebuilt from: its architecture, or its spec without weights."""
    return entry.get("architecture") or architecture_spec(entry["spec"])


def _provenance(folder: Path, entry: dict) -> dict[str, Any]:
    """A parent's spec, architecture and the weights file it came from (with its sha256)."""
    out = {k: entry[k] for k in ("spec", "architecture", "weights_sha256") if k in entry}
    weights = entry.get("weights")
    out["weights"] = str(folder / weights) if weights else None  # absolute stays absolute
    if "sha256" in entry:  # evostitch <= 0.1
        out["weights_sha256"] = entry["sha256"]
    return out


def _parent(
    folder: Path, side: str, entry: dict, own: dict[str, torch.Tensor], trust_code: bool
) -> torch.nn.Module:
    """Parent `side`: its architecture rebuilt, its weights from the folder (or, in folders
    of evostitch <= 0.1 that did not store them, from the file recorded with its sha256)."""
    spec = _architecture(entry)
    label = f"parent {side.upper()} ({entry['spec']})"
    try:
        if own:
            model = load_model(spec, trust_code=trust_code)
            load_weights(model, own, entry["spec"])
            return model
        weights = entry.get("weights")
        if not weights:
            raise SupernetError(f"{folder} holds no weights for parent {side.upper()}")
        path = Path(weights) if Path(weights).is_absolute() else folder / weights
        if not os.path.lexists(path):
            raise SupernetError(f"parent {side.upper()} weights {path} are missing")
        if _sha256(readable_file(path)) != entry.get("sha256"):
            raise SupernetError(f"parent {side.upper()} weights {path} have changed")
        return load_model(spec, path, trust_code=trust_code)
    except SupernetError:
        raise
    except EvostitchError as exc:  # the same kind, saying which parent of which folder
        raise type(exc)(f"{folder / JSON_NAME}: {label}: {exc}") from None
