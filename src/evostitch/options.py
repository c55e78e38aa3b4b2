"""The options of the API's calls (`evostitch.api`) checked before any work, one line each:
the parents and their weights, numbers in range, seeds, and the output folders `stitch` and
`search` will write."""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import EvostitchError, SearchError, SupernetError
from .files import writable_folder

MAX_SEED = 2**32 - 1  # training derives seeds from it (seed * 100_003 + epoch) for torch


def check_seed(seed: Any, error: type[EvostitchError] = EvostitchError) -> int:
    """`seed` if it is an integer in 0..MAX_SEED; `error` in one line otherwise."""
    if not _count(seed, 0) or seed > MAX_SEED:
        raise error(f"need a seed from 0 to {MAX_SEED} (--seed), got {seed!r}")
    return operator.index(seed)


def _count(value: Any, least: int) -> bool:
    """Whether `value` is an integer (not a bool; numpy's too) of at least `least`."""
    try:
        return not isinstance(value, bool) and operator.index(value) >= least
    except TypeError:
        return False


def _finite(value: Any, least: float) -> bool:
    """Whether `value` is a finite number (not a bool) of at least `least`."""
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    return number and least <= value < math.inf


def check_parents(parents: Any, weights: Sequence[Any] | None) -> tuple[list[Any], list[Any]]:
    """The parents (K >= 2, in side order) and one weights entry per parent (None: none)."""
    if isinstance(parents, str | bytes | Path) or not isinstance(parents, Sequence):
        raise SupernetError(f"parents is a list of K >= 2 parents, e.g. [a, b]; got {parents!r}")
    parents = list(parents)
    if len(parents) < 2:
        raise SupernetError(f"need at least two parents, got {len(parents)}")
    weights = list(weights) if weights is not None else [None] * len(parents)
    if len(weights) != len(parents):
        raise SupernetError(f"{len(weights)} weights for {len(parents)} parents")
    return parents, weights


def check_match_options(max_ratio: Any, time_limit: Any = None) -> None:
    """The matching's numbers in range, in one line, before any parent is traced."""
    if not _count(max_ratio, 1) or not (time_limit is None or _finite(time_limit, 0)):
        raise SupernetError(
            f"need max_ratio (--max-ratio) >= 1 and time_limit (--time-limit) >= 0; "
            f"got {max_ratio!r}, {time_limit!r}"
        )


def check_stitch_options(
    input_shape: Sequence[int] | None, max_ratio: int, hold_samples: int, training: dict
) -> None:
    """Every numeric option of `stitch` in its range, in one line, before any work."""
    if input_shape is None:
        raise SupernetError("stitching needs input_shape (one input's shape, e.g. (3, 224, 224))")
    if len(input_shape) == 0 or not all(_count(n, 1) for n in input_shape):
        raise SupernetError(f"need an input shape of positive sizes, got {tuple(input_shape)}")
    check_seed(training["seed"], SupernetError)
    epochs = training["epochs"]
    bad = [
        ("max_ratio (--max-ratio) >= 1", not _count(max_ratio, 1)),
        ("hold_samples (--hold-samples) >= 0", not _count(hold_samples, 0)),
        ("batch_size (--batch-size) >= 1", not _count(training["batch_size"], 1)),
        ("fit_samples (--fit-samples) >= 0", not _count(training["fit_samples"] or 0, 0)),
        ("fit_memory (--fit-memory) >= 1", not _optional_count(training["fit_memory"], 1)),
        ("steps (--steps) >= 0", not _count(training["steps"] or 0, 0)),
        ("downstream (--downstream-steps) >= 0", not _count(training.get("downstream") or 0, 0)),
        ("epochs (--epochs) >= 0", epochs is not None and not _finite(epochs, 0)),
    ]
    if wrong := [what for what, failed in bad if failed]:
        raise SupernetError(f"need {', '.join(wrong)}")
    if training["steps"] is not None and epochs is not None:
        raise SupernetError("give steps (--steps) or epochs (--epochs), not both")


def stitch_folder(out: str | Path | None) -> Path | None:
    """The output folder, checked writable before any work; None without one."""
    if out is None:
        return None
    folder = writable_folder(out, "output folder")
    if (folder / "supernet.json").exists():
        raise SupernetError(f"{folder} already holds a finished result: choose another folder")
    return folder


def check_leftover(
    folder: Path | None, models: list, input_shape: Sequence[int], matching: dict, training: dict
) -> None:
    """Refuse, before the parents are loaded and matched, a stitch-training checkpoint
    left in `folder` by a command with other parents or settings (`training.checkpoint`;
    their weights and stitches are checked once built)."""
    from .training.checkpoint import check_settings

    if folder is None:
        return
    names = [m if isinstance(m, str) else type(m).__name__ for m in models]
    settings = {"parents": names, "input_shape": list(input_shape), **matching}
    settings.update(seed=training["seed"], batch_size=training["batch_size"])
    check_settings(folder / "checkpoints", settings)


def _optional_count(value: Any, low: int) -> bool:
    """None, or an int >= low (0 is a value here, not "unset")."""
    return value is None or _count(value, low)


def check_batch(batch: int) -> None:
    """The offspring a worker evaluates together: at least one."""
    if not _count(batch, 1):
        raise SearchError(f"need batch (--batch) >= 1; got {batch!r}")


def check_search_options(
    budget: int,
    seed: int,
    population: int,
    p_stitch: float,
    steer_to: float,
    val_subset: int | None,
    batch: int,
) -> None:
    """Every numeric option of `search` in its range, in one line, before any work."""
    check_seed(seed, SearchError)
    bad = [
        ("budget (--budget) >= 1", not _count(budget, 1)),
        ("population (--population) >= 2", not _count(population, 2)),
        ("0 <= p_stitch (--p-stitch) <= 1", not (_finite(p_stitch, 0) and p_stitch <= 1)),
        ("0 <= steer_to (--steer-to) <= 1", not (_finite(steer_to, 0) and steer_to <= 1)),
        ("val_subset (--val-subset) >= 1", val_subset is not None and not _count(val_subset, 1)),
        ("batch (--batch) >= 1", not _count(batch, 1)),
    ]
    if wrong := [what for what, failed in bad if failed]:
        raise SearchError(f"need {', '.join(wrong)}")


def check_backend_options(options: dict[str, Any]) -> None:
    """The Ray backend's numbers in range (workers >= 1, GPUs >= 0, CPUs > 0)."""
    workers = options.get("workers", 1)
    gpus, cpus = options.get("gpus_per_worker", 0.0), options.get("cpus_per_worker", 1.0)
    bad = [
        ("workers (--workers) >= 1", not _count(workers, 1)),
        ("gpus_per_worker (--gpus-per-worker) >= 0", not _finite(gpus, 0)),
        ("cpus_per_worker (--cpus-per-worker) > 0", not (_finite(cpus, 0) and cpus > 0)),
    ]
    if wrong := [what for what, failed in bad if failed]:
        raise SearchError(f"need {', '.join(wrong)}")


def run_folder(out: str | Path) -> Path:
    """A new run folder, checked before any work: writable, and new or empty (a run
    folder already used is continued with `resume`, never written over)."""
    folder = writable_folder(out, "run folder")
    if folder.is_dir() and any(folder.iterdir()):
        raise SearchError(
            f"{folder} already exists and is not empty: choose a new run folder or resume it"
        )
    return folder
