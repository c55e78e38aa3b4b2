"""The demo: bundled real data -> two trained parents -> supernetwork -> search -> report."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from rich.console import Console

from .errors import EvostitchError

SUMMARY = "summary.json"


def run_demo(
    task: str,
    out: Path,
    *,
    algorithm: str,
    budget: int,
    epochs: float,
    population: int,
    seed: int = 0,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> dict:
    """Run the whole pipeline into `out`; `summary.json` is written last (it marks success)."""
    from safetensors.torch import save_file

    from .cli import run_stitch_search
    from .data import dataset_info, load_dataset
    from .report import write_report
    from .search.store import RunStore
    from .supernet import Supernet
    from .training import train_stitches
    from .zoo import get_demo_parents

    out = Path(out)
    if (out / SUMMARY).exists():
        raise EvostitchError(f"{out} already holds a finished demo: choose another --out")
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out / "supernet", ignore_errors=True)  # an interrupted earlier demo
        shutil.rmtree(out / "run", ignore_errors=True)
    say = Console(stderr=True).print if progress else (lambda *a, **k: None)
    start = time.perf_counter()
    model_a, model_b, info = get_demo_parents(task, cache_dir=cache_dir, progress=progress)
    spec, meta = info["dataset"], dataset_info(info["dataset"])
    (out / "parents").mkdir(parents=True, exist_ok=True)
    specs = []
    for name, model in zip(info["names"], (model_a, model_b), strict=True):
        path = out / "parents" / f"{name}.safetensors"
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path)
        )
        specs.append((f"demo:{name}?num_classes={meta.num_classes}", path))
    say("[bold]1/3[/bold] matching the parents and inserting stitches")
    net = Supernet.build(
        specs[0][0], specs[1][0], meta.input_shape, weights_a=specs[0][1], weights_b=specs[1][1]
    )
    net.data = spec
    say(f"    {len(net.matches)} matched points, {len(net.genotype_spec)} variables")
    say("[bold]2/3[/bold] training the stitches (parents frozen)")
    result = train_stitches(
        net, load_dataset(spec, "train"), epochs=epochs, seed=seed, progress=progress
    )
    net.save(out / "supernet")
    result.save(out / "supernet" / "stitch_losses.json")
    say(f"[bold]3/3[/bold] searching offspring with {algorithm} ({budget} evaluations)")
    search = run_stitch_search(
        out / "supernet",
        out / "run",
        data=spec,
        algorithm=algorithm,
        budget=budget,
        seed=seed,
        population=population,
        p_stitch=0.02,
        progress=progress,
    )
    with RunStore.open(out / "run", readonly=True) as store:
        stored = {r.canonical: r for r in store.records() if r.ok}
    names = ["parent A", "parent B", "ensemble", "ensemble (probabilities)"]
    references = {
        names[i]: stored[g].objectives for i, g in enumerate(net.reference_genotypes) if g in stored
    }
    files = write_report(out / "run", references)
    best = max(search.front, key=lambda r: (-r.objectives[0], -r.objectives[1]))
    metric = "accuracy" if task == "classification" else "miou"
    summary = {
        "task": task,
        "metric": metric,
        "dataset": spec,
        "parents_test": info["metrics"],
        "references": {k: {"metric": -v[0], "macs": v[1]} for k, v in references.items()},
        "best": {
            "metric": -best.objectives[0],
            "macs": best.objectives[1],
            "genotype": list(best.canonical),
            "description": net.describe(best.canonical),
        },
        "front_size": len(search.front),
        "evaluations": search.performed,
        "seconds": time.perf_counter() - start,
        "files": {
            "supernetwork": str(out / "supernet"),
            "run": str(out / "run"),
            **{p.name: str(p) for p in files},
        },
    }
    (out / SUMMARY).write_text(json.dumps(summary, indent=1))
    return summary
