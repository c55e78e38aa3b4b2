"""The demo: bundled real data -> two trained parents -> supernetwork -> search -> report."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from ..api import DEFAULT_EVAL_BATCH
from ..api import search as search_supernet
from ..data import load_dataset
from ..errors import RunError
from ..evaluation.holding import hold_evaluator
from ..evolution.algorithms import AUTO, AUTO_RUNS
from ..evolution.stitching import make_evaluator
from ..files import atomic_write, inside, writable_folder, write_text_atomic
from ..fitting import fit_and_map
from ..results.findings import KEYS as FINDINGS
from ..results.reevaluate import reevaluate
from ..results.report import LABELS, write_report
from ..results.solutions import genotype_text, reference_name
from ..supernet import Supernet
from ..training import TrainSettings, train_stitches
from .parents import get_demo_parents

if TYPE_CHECKING:
    from ..evaluation import Evaluator

SUMMARY = "summary.json"


def build_demo_supernet(
    task: str,
    folder: Path,
    *,
    cache_dir: Path | None = None,
    progress: bool = True,
    parent_steps: int | None = None,
) -> tuple[Supernet, dict]:
    """The demo parents (weights saved into `folder`) joined into an untrained supernetwork.

    Returns it with `get_demo_parents`' info dict.
    """
    from safetensors.torch import save_file

    model_a, model_b, info = get_demo_parents(
        task, cache_dir=cache_dir, progress=progress, steps=parent_steps
    )
    num_classes = info["dataset_info"].num_classes
    folder.mkdir(parents=True, exist_ok=True)
    specs = []
    for name, model in zip(info["names"], (model_a, model_b), strict=True):
        path = folder / f"{name}.safetensors"
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        atomic_write(path, lambda tmp, state=state: save_file(state, tmp))
        specs.append((f"demo:{name}?num_classes={num_classes}", path))
    net = Supernet.build(
        [spec for spec, _ in specs],
        info["dataset_info"].input_shape,
        weights=[path for _, path in specs],
    )
    net.data = info["dataset"]
    return net, info


def run_demo(
    task: str,
    out: Path,
    *,
    algorithm: str,
    budget: int,
    population: int,
    training: TrainSettings | None = None,
    seed: int = 0,
    cache_dir: Path | None = None,
    progress: bool = True,
    parent_steps: int | None = None,
) -> dict:
    """Run the whole pipeline into `out`; `summary.json` is written last (it marks success).

    Stitches are trained as `training` says (None: the library's defaults), seeded by
    `seed`. `parent_steps` overrides the parents' training length (tests use a few steps).
    """
    out = _output_folder(out)
    say = Console(stderr=True).print if progress else (lambda *a, **k: None)
    start = time.perf_counter()
    say("[bold]1/3[/bold] parents (from the cache, else trained now), matching, stitches")
    net, info = build_demo_supernet(
        task, out / "parents", cache_dir=cache_dir, progress=progress, parent_steps=parent_steps
    )
    spec = info["dataset"]
    say(f"    {len(net.matches)} matched points, {len(net.genotype_spec)} variables")
    say("[bold]2/3[/bold] fitting the stitches (parents frozen)")
    val = hold_evaluator(net, load_dataset(spec, "val"), info["dataset_info"].num_classes)
    train = load_dataset(spec, "train")
    fitted = fit_and_map(  # leaves the poor stitches out, as `evostitch stitch` does
        net,
        lambda: train_stitches(net, train, training, seed=seed, progress=progress),
        val,
        seed=seed,
    )
    say("\n".join(f"    {line}" for text in fitted.lines for line in text.splitlines()))
    net.save(out / "supernet")
    fitted.save(out / "supernet")
    if algorithm == AUTO:
        algorithm = AUTO_RUNS
    say(f"[bold]3/3[/bold] searching offspring with {algorithm} ({budget} evaluations)")
    run = search_supernet(
        out / "supernet",
        out=out / "run",
        data=spec,
        algorithm=algorithm,
        budget=budget,
        seed=seed,
        population=population,
        # 250 evaluations: too few for racing to reach full's front (METHOD.md, 7)
        fidelity="full",
        p_stitch=0.02,
        batch=DEFAULT_EVAL_BATCH,
        progress=progress,
    )
    summary = _summarize(task, out, net, info, run, start)
    write_text_atomic(out / SUMMARY, json.dumps(summary, indent=1))
    return summary


def _summarize(task: str, out: Path, net: Supernet, info: dict, run: Any, start: float) -> dict:
    """Re-evaluate the run on test, write its report and sum the demo up (summary.json)."""
    spec = info["dataset"]
    search, records = run.result, run.records
    by_name = {reference_name(r.canonical): r for r in records}
    refs = {label: by_name[k] for k, label in LABELS.items() if k in by_name}
    scored = json.loads(reevaluate(out / "run", "test").read_text())  # findings on test
    on_test = {row["genotype"]: row["test"][scored["metric"]] for row in scored["solutions"]}
    files = write_report(out / "run")  # its references: those stored in the run
    findings = json.loads((out / "run" / "findings.json").read_text())
    reference_set = set(net.reference_genotypes)
    front = {r.canonical for r in search.front}
    best = _best_offspring(records, reference_set, front)
    test = make_evaluator(net, spec, "test")  # for a best offspring off the front
    folder = out.resolve()
    summary = {
        "task": task,
        "metric": test.metric_name,
        "dataset": spec,
        "parents_test": info["metrics"],
        "references": {k: _row(r, test, on_test) for k, r in refs.items()},
        "best": {
            **_row(best, test, on_test),
            "genotype": list(best.canonical),
            "description": net.describe(best.canonical),
            "on_front": best.canonical in front,
        },
        "front_size": len(search.front),
        "front_stitched": sum(r.canonical not in reference_set for r in search.front),
        "evaluations": search.performed,
        "findings": {k: findings[k]["text"] for k in FINDINGS if k in findings},
        "seconds": time.perf_counter() - start,
        "files": {
            "summary": str(folder / SUMMARY),
            "supernetwork": str(folder / "supernet"),
            "run": str(folder / "run"),
            **{p.name: str(p.resolve()) for p in files},
        },
    }
    return summary


def _output_folder(out: Path) -> Path:
    """`out` checked before any work (writable, no finished demo) and cleared of an
    interrupted earlier demo; its subfolders must not be links leading outside it (a
    received folder's `supernet` link would make us delete or write the files it leads to)."""
    out = writable_folder(out, "demo folder")
    if (out / SUMMARY).exists() or (out / SUMMARY).is_symlink():
        raise RunError(f"{out} already holds a finished demo: choose another --out")
    for name in ("parents", "supernet", "run"):
        inside(out, out / name)
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out / "supernet", ignore_errors=True)  # an interrupted earlier demo
        shutil.rmtree(out / "run", ignore_errors=True)
    return out


def _best_offspring(records: list, references: set, front: set) -> Any:
    """The most accurate (then cheapest) stitched offspring on the front, else of all
    evaluated; a reference solution only if the search evaluated nothing else."""
    stitched = [r for r in records if r.canonical not in references]
    pool = [r for r in stitched if r.canonical in front] or stitched or records
    if not pool:
        raise RunError("the search evaluated nothing")
    return min(pool, key=lambda r: tuple(r.objectives))


def _row(record: Any, test: Evaluator, on_test: dict[str, float]) -> dict[str, float]:
    """Validation metric (from the search), test metric (from the re-evaluation, else
    scored now) and MACs of one genotype."""
    key = genotype_text(record.canonical)
    score = on_test[key] if key in on_test else test.metrics(record.canonical)[test.metric_name]
    return {"metric": -record.objectives[0], "test_metric": score, "macs": record.objectives[1]}
