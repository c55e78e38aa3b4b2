"""What a saved supernetwork's JSON may hold: every field of `supernet.json` checked
against what `io.save` writes (types, ranges, lengths; an input shape against the memory
tracing it would take) before anything is built, each failure one SupernetError line
naming the file and the field. Files are read only when regular (a FIFO would block)."""

from __future__ import annotations

import json
import math
import os
import reprlib
import stat
from pathlib import Path
from typing import Any

from ..errors import EvostitchError, SupernetError
from ..files import regular_file
from ..models import split_spec

FORMAT = "evostitch.supernet"
VERSION = 1

# supernet.json holds a few hundred bytes per parent node (its cost) and per matched
# group: even 26 parents of thousands of nodes stay far below this
MAX_JSON_BYTES = 64 << 20
MAX_TEXT = 4096  # a spec, a path, a dataset spec or a node name
# tracing runs the parents on TRACE_BATCH inputs of float32; their activations take
# about ACTIVATIONS times the input (measured 15x to 76x on resnet18, deeplabv3 and the
# demo nets at 512 x 512): a shape whose estimate exceeds the memory available cannot
# be traced. MAX_INPUT_VALUES (1 GiB a sample) bounds it where no figure can be read.
TRACE_BATCH, ACTIVATIONS, MAX_INPUT_VALUES = 2, 16, 1 << 28
MAX_MACS = 1e18  # per node or stitch and sample: a billion GMACs


def _short_repr() -> reprlib.Repr:
    """A repr cut short: a crafted value of megabytes shows as its first characters."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = 40
    short.maxlist, short.maxdict, short.maxlevel = 6, 4, 2
    return short


show = _short_repr().repr


def available_memory() -> int | None:
    """Bytes this process may still take: the kernel's MemAvailable, or less under a
    cgroup's limit; None where neither can be read (not Linux)."""
    found = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return max(min(found), 0) if found else None


def readable_file(path: Path) -> Path:
    """`path` if it is a regular file; SupernetError otherwise (checked before opening:
    a FIFO named like one of our files would block the reader for ever)."""
    try:
        return regular_file(path)
    except EvostitchError as exc:
        raise SupernetError(f"{exc}: refusing to read it") from None


def read_json(path: Path, limit: int = MAX_JSON_BYTES) -> Any:
    """The JSON value of a regular file of at most `limit` bytes; SupernetError (one
    line) if it is not one, is larger or is not JSON."""
    readable_file(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # swapped since the check
                raise SupernetError(f"{path} is not a regular file: refusing to read it")
            data = f.read(limit + 1)
    except OSError as exc:
        raise SupernetError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise SupernetError(f"{path} is over {limit:,} bytes: not one we wrote")
    try:
        return json.loads(data)
    except RecursionError:
        raise SupernetError(f"{path} is damaged: nested too deeply") from None
    except ValueError as exc:  # not JSON, not UTF-8, an integer of 5000 digits
        why = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise SupernetError(f"{path} is damaged: {why}") from None


def _bad(path: Path, field: str, want: str, value: Any) -> SupernetError:
    return SupernetError(f"{path}: {field} must be {want}, not {show(value)}")


def _number(value: Any, low: float = -math.inf, high: float = math.inf) -> bool:
    """A finite int or float (not a bool) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, int) and abs(value) > 2**63:
        return False
    return math.isfinite(value) and low <= value <= high


def _text(value: Any, empty: bool = False) -> bool:
    return isinstance(value, str) and (empty or value != "") and len(value) <= MAX_TEXT


def check_meta(meta: Any, path: Path) -> None:
    """SupernetError, one line naming `path` and the field, unless `meta` is what `save`
    writes with every value in range (nothing is built: microseconds)."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SupernetError(f"{path} is not an evostitch supernetwork file")
    version = meta.get("version")
    if isinstance(version, bool) or version != VERSION:
        raise SupernetError(f"{path} has format version {show(version)}, not {VERSION}")
    parents = meta.get("parents")
    if not isinstance(parents, list) or not 2 <= len(parents) <= 26:
        raise _bad(path, "parents", "a list of 2 to 26 parent records", parents)
    for i, entry in enumerate(parents):
        _check_parent(entry, f"parents[{i}]", path)
    _check_shape(meta.get("input_shape"), path)
    leaf = meta.get("leaf_modules")
    if not isinstance(leaf, list) or not all(_text(v) for v in leaf):
        raise _bad(path, "leaf_modules", "a list of module names", leaf)
    hashes = meta.get("sha256")
    if hashes is not None and not (
        isinstance(hashes, dict) and all(_text(v) for v in hashes.values())
    ):
        raise _bad(path, "sha256", "a table of file name to sha256", hashes)
    _check_matches(meta.get("matches"), len(parents), path)
    if meta.get("matching") is not None and not isinstance(meta["matching"], dict):
        raise _bad(path, "matching", "a table or null", meta["matching"])
    if meta.get("data") is not None and not _text(meta["data"]):
        raise _bad(path, "data", "a dataset spec or null", meta["data"])
    _check_cost(meta.get("cost"), path)


def _check_parent(entry: Any, field: str, path: Path) -> None:
    """A parent record: its spec (and architecture) parse as model specs."""
    if not isinstance(entry, dict):
        raise _bad(path, field, "a parent record", entry)
    for key in ("spec", "architecture"):
        value = entry.get(key)
        if key == "architecture" and value is None:
            continue
        if not _text(value):
            raise _bad(path, f"{field}.{key}", "a model spec", value)
        try:
            split_spec(value)
        except EvostitchError as exc:
            raise SupernetError(f"{path}: {field}.{key}: {exc}") from None
    for key in ("weights", "weights_sha256", "sha256"):
        value = entry.get(key)
        if value is not None and not (_text(value) and "\0" not in value):
            raise _bad(path, f"{field}.{key}", "a text or null", value)


def _check_shape(shape: Any, path: Path) -> None:
    """One sample's shape: positive ints, small enough to trace in the memory left."""
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 8
        or not all(_number(v, 1, 2**31) and isinstance(v, int) for v in shape)
    ):
        raise _bad(path, "input_shape", "1 to 8 positive ints (one sample's shape)", shape)
    values = math.prod(shape)
    need = values * 4 * TRACE_BATCH * ACTIVATIONS
    avail = available_memory()
    if values > MAX_INPUT_VALUES or (avail is not None and need > avail):
        room = f"the {avail / 2**30:.1f} GiB available" if avail is not None else "any machine's"
        raise SupernetError(
            f"{path}: input_shape {shape} is too large to trace: {values:,} values a sample "
            f"take about {need / 2**30:,.1f} GiB with their activations, more than {room}"
        )


def _check_matches(matches: Any, k: int, path: Path) -> None:
    """Rows of K node names (null where a parent has none, at least two names) and a
    finite score; no node in two rows."""
    if not isinstance(matches, list):
        raise _bad(path, "matches", "a list of matched groups", matches)
    seen: list[set[str]] = [set() for _ in range(k)]
    for i, row in enumerate(matches):
        if (
            not isinstance(row, list)
            or len(row) != k + 1
            or not all(n is None or _text(n) for n in row[:k])
            or sum(n is not None for n in row[:k]) < 2
            or not _number(row[k])
        ):
            want = f"{k} node names (null where a parent has none, at least two) and a score"
            raise _bad(path, f"matches[{i}]", want, row)
        for column, name in zip(seen, row[:k], strict=False):
            if name in column:
                raise SupernetError(f"{path}: matches[{i}] matches node {name} a second time")
            if name is not None:
                column.add(name)


def _check_cost(cost: Any, path: Path) -> None:
    """null, or MACs per node `[side, node, MACs]` and per stitch, finite and >= 0."""
    if cost is None:
        return
    if not isinstance(cost, dict):
        raise _bad(path, "cost", "a cost table or null", cost)
    nodes, stitches = cost.get("node_macs"), cost.get("stitch_macs")
    if not isinstance(nodes, list):
        raise _bad(path, "cost.node_macs", "a list of [side, node, MACs]", nodes)
    if not isinstance(stitches, dict):
        raise _bad(path, "cost.stitch_macs", "a table of stitch to MACs", stitches)
    for i, row in enumerate(nodes):
        if not (
            isinstance(row, list)
            and len(row) == 3
            and _text(row[0])
            and _text(row[1])
            and _number(row[2], 0, MAX_MACS)
        ):
            raise _bad(path, f"cost.node_macs[{i}]", "[side, node, MACs >= 0]", row)
    for name, macs in stitches.items():
        if not _number(macs, 0, MAX_MACS):
            raise _bad(path, f"cost.stitch_macs.{show(name)}", "MACs >= 0", macs)
