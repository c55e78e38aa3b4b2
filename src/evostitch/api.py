"""The Python API: one call per command of the CLI, returning objects.

    net = evostitch.stitch("torchvision:resnet18", "torchvision:mobilenet_v3_small",
                           (3, 224, 224), data="imagefolder:~/pets", out="runs/sn")
    run = evostitch.search("runs/sn", out="runs/r1", budget=2000)
    run = evostitch.load_run("runs/r1")   # later, or on another machine
    run.front, run.reevaluate("test"), run.export("parent-a", "exported/")

The CLI parses arguments and prints; everything else happens here or below.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from .data import check_input_shape, dataset_info, load_dataset
from .devices import check_amp, resolve_device
from .errors import SearchError, SupernetError
from .evaluation.holding import HOLD_SAMPLES, hold_evaluator, measured, save_hold_figure
from .evaluation.racing import DEFAULT_CONFIDENCE
from .evolution.algorithms import ALGORITHMS, AUTO, default_algorithm, make_algorithm
from .evolution.backend import Backend
from .evolution.loop import resume_search, run_search
from .evolution.racing import save_race_counts
from .evolution.stitching import DEFAULT_FIDELITY, problem_from_spec, problem_spec, supernet_data
from .evolution.store import RunConfig, RunStore
from .execution import DEFAULT_EVAL_BATCH, make_backend
from .files import user_path
from .graph import Graph, example_input, trace
from .inputs import check_data, input_batches, resolve_data
from .matching import MatchResult
from .matching import match as match_graphs
from .models import load_model
from .results.folder import Run
from .supernet import Supernet

DEFAULT_ALGORITHM = AUTO  # by the number of variables: `default_algorithm`


def _say(progress: bool):
    console = Console(stderr=True, highlight=False)
    return console.print if progress else (lambda *_, **__: None)


def match(
    a: str | nn.Module | Graph,
    b: str | nn.Module | Graph,
    input_shape: Sequence[int] | None = None,
    *,
    weights_a: str | Path | None = None,
    weights_b: str | Path | None = None,
    data: str | Iterable[torch.Tensor] | None = None,
    similarity: str = "uniform",
    max_ratio: int = 1,
    leaf_modules: Sequence[str] = (),
    time_limit: float | None = None,
    progress: bool = True,
) -> MatchResult:
    """Match two parents' layers without creating cycles (`evostitch match`).

    Parents are traced graphs, modules or model specs (then `input_shape` is needed).
    CKA similarity reads inputs from `data`: input batches, or a dataset spec's training
    split (random inputs without it).
    """
    graphs = []
    for model, weights in ((a, weights_a), (b, weights_b)):
        if not isinstance(model, Graph):
            if input_shape is None:
                raise SupernetError("matching models (not traced graphs) needs input_shape")
            if isinstance(model, str):
                model = load_model(model, weights)
            model = trace(model, example_input(input_shape), leaf_modules)
        graphs.append(model)
    shape = input_shape or graphs[0][graphs[0].input].shape[1:]
    batches = data
    if similarity == "cka" and (data is None or isinstance(data, str)):
        batches = input_batches(data, shape, progress=progress)
    return match_graphs(
        graphs[0],
        graphs[1],
        similarity=similarity,
        data=batches,
        max_ratio=max_ratio,
        time_limit=time_limit,
    )


def stitch(
    a: str | nn.Module,
    b: str | nn.Module,
    input_shape: Sequence[int],
    *,
    data: str | None = None,
    out: str | Path | None = None,
    weights_a: str | Path | None = None,
    weights_b: str | Path | None = None,
    similarity: str = "uniform",
    max_ratio: int = 1,
    leaf_modules: Sequence[str] = (),
    fit_samples: int | None = None,
    steps: int | None = None,
    epochs: float | None = None,
    batch_size: int = 32,
    seed: int = 0,
    device: str | torch.device | None = None,
    amp: str | None = None,
    hold_samples: int = HOLD_SAMPLES,
    progress: bool = True,
) -> Supernet:
    """Build a supernetwork, fit its stitches on `data`'s train split and save it into
    `out` (`evostitch stitch`). Without `data` the stitches stay untrained. `hold_samples`
    random offspring per p are scored before and after (0: none; `evaluation.holding`).
    `seed` seeds the stitches' initialisation, the fit's images and the offspring drawn.

    `fit_samples` images fit the stitches by least squares, then `steps` (or `epochs`)
    gradient steps train them; None takes the library's defaults
    (`evostitch.training.DEFAULT_FIT_SAMPLES`, `DEFAULT_STEPS`)."""
    from .training import DEFAULT_FIT_SAMPLES, train_stitches

    say = _say(progress)
    device, amp = resolve_device(device), check_amp(amp)  # before an hour of work, not after
    folder = user_path(out) if out is not None else None
    if folder is not None and (folder / "supernet.json").exists():
        raise SupernetError(f"{folder} already holds a finished result: choose another folder")
    data = resolve_data(data, a, b, input_shape, progress)
    if data is not None:
        check_input_shape(data, input_shape)
    batches = input_batches(data, input_shape, progress=progress) if similarity == "cka" else None
    net = Supernet.build(
        a,
        b,
        input_shape,
        weights_a=weights_a,
        weights_b=weights_b,
        similarity=similarity,
        data=batches,
        max_ratio=max_ratio,
        leaf_modules=leaf_modules,
        seed=seed,
    )
    if data is not None:
        check_data(net, data)
    net.data = data  # what `search` evaluates on unless told otherwise
    say(f"matched {len(net.matches)} points: {len(net.genotype_spec)} variables")
    if data is not None:
        val = load_dataset(data, "val")
        result, hold = measured(
            lambda: train_stitches(
                net,
                load_dataset(data, "train"),
                fit_samples=DEFAULT_FIT_SAMPLES if fit_samples is None else fit_samples,
                steps=steps,
                epochs=epochs,
                batch_size=batch_size,
                seed=seed,
                device=device,
                amp=amp,
                checkpoint_dir=folder / "checkpoints" if folder is not None else None,
                progress=progress,
            ),
            hold_evaluator(net, val, dataset_info(data).num_classes, device=device, amp=amp),
            samples=hold_samples,
            seed=seed,
        )
        say(result.summary(net) + (f"\n{hold['text']}" if hold else ""))
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            result.save(folder / "stitch_losses.json")
            if hold:
                save_hold_figure(hold, folder)
    else:
        say("[yellow]no data: stitches are untrained[/yellow]")
    if folder is not None:
        net.save(folder)
        say(f"supernetwork saved to {folder}")
    return net


def inspect(
    supernet: str | Path | Supernet, samples: int = 8, *, trust_code: bool = False
) -> dict[str, Any]:
    """Parents and their cost, matches, variables and a sample of offspring
    (`evostitch inspect`), as plain JSON-able values."""
    if not isinstance(supernet, Supernet):
        supernet = Supernet.load(supernet, trust_code=trust_code)
    net = supernet
    rng = random.Random(0)
    refs = {
        c: net.cost(g) for c, g in zip(net.output_choices, net.reference_genotypes, strict=True)
    }
    sample = []
    for _ in range(samples):
        g = [rng.randrange(net.genotype_spec[0])]
        g += [int(rng.random() < 0.1) for _ in net.genotype_spec[1:]]
        sample.append({"genotype": net.canonical(g), **net.cost(g), "description": net.describe(g)})
    return {
        "parents": [
            {"side": side, **(spec or {}), **refs[side]}
            for side, spec in zip("ab", net.specs, strict=True)
        ],
        "task": net.task,
        "references": refs,
        "matches": [{"a": x, "b": y, "score": s} for x, y, s in net.matches],
        "variables": len(net.genotype_spec),
        "genotype_spec": net.genotype_spec,
        "offspring_sample": sample,
    }


def load_run(run: str | Path, *, trust_code: bool = False) -> Run:
    """Open a run folder (read only: a search may still be writing it)."""
    path = user_path(run)
    with RunStore.open(path, readonly=True) as store:
        return Run(path, store.config, trust_code=trust_code)


def _checkpoint_every(budget: int) -> int:
    """Checkpoint every 100 evaluations, or every tenth of a smaller budget."""
    return max(1, min(100, budget // 10))


def search(
    supernet: str | Path,
    *,
    out: str | Path,
    data: str | None = None,
    algorithm: str = DEFAULT_ALGORITHM,
    budget: int = 1000,
    seed: int = 0,
    population: int = 64,
    p_stitch: float = 0.02,
    steer_to: float = 0.5,
    backend: str | Backend = "inprocess",
    batch: int = DEFAULT_EVAL_BATCH,
    progress: bool = True,
    trust_code: bool = False,
    device: str | None = None,
    amp: str | None = None,
    val_subset: int | None = None,
    fidelity: str = DEFAULT_FIDELITY,
    confidence: float = DEFAULT_CONFIDENCE,
    **backend_options: Any,
) -> Run:
    """Search a saved supernetwork's offspring into a new run folder `out`
    (`evostitch search`); writes RUN/front.csv at the end. `backend_options`: workers,
    gpus_per_worker, cpus_per_worker, ray_address (see `make_backend`); `trust_code`
    rebuilds a parent named by `package.module:factory`; `device` and `amp` ("bf16",
    "fp16": evaluation under autocast, recorded in the run) say how offspring run;
    `val_subset` searches on a seeded subset of that many validation samples (the
    reference searched on 1,000 ImageNet-V2 images), recorded in the run; `fidelity`
    "race" stops offspring early at `confidence` (`evostitch.evaluation.racing`)."""
    if algorithm not in (*ALGORITHMS, AUTO):
        raise SearchError(f"unknown algorithm {algorithm!r}: {', '.join(ALGORITHMS)} or auto")
    device, amp = resolve_device(device), check_amp(amp)
    if budget < 1 or population < 2 or not 0 <= p_stitch <= 1 or not 0 <= steer_to <= 1:
        raise SearchError(
            "need budget >= 1, population >= 2, 0 <= p_stitch <= 1, 0 <= steer_to <= 1"
        )
    if val_subset is not None and val_subset < 1:
        raise SearchError(f"need val_subset >= 1, got {val_subset}")
    data = data or supernet_data(supernet)
    spec = problem_spec(
        supernet, data, amp=amp, subset=val_subset, fidelity=fidelity, confidence=confidence
    )
    problem, _ = problem_from_spec(spec, trust_code=trust_code, device=device)
    if algorithm == AUTO:
        algorithm = default_algorithm(len(problem.cardinalities))
    params = {"pop_size": population, "budget": budget, "p_stitch": p_stitch, "steer_to": steer_to}
    config = RunConfig(algorithm=algorithm, budget=budget, seed=seed, params=params, problem=spec)
    runner = make_backend(
        backend,
        supernet,
        data,
        batch=batch,
        problem=problem,
        trust_code=trust_code,
        device=device,
        amp=amp,
        subset=val_subset,
        race=spec,
        **backend_options,
    )
    try:
        with RunStore.create(out, config) as store:
            algo = make_algorithm(algorithm, problem, seed, **params)
            result = run_search(
                problem,
                algo,
                store,
                runner,
                budget,
                progress=progress,
                checkpoint_every=_checkpoint_every(budget),
            )
    finally:
        runner.close()
    run = load_run(out, trust_code=trust_code)
    run.result = result
    run.write_front_csv()
    save_race_counts(run.path, run.records)
    return run


def resume(
    run: str | Path,
    *,
    backend: str | Backend = "inprocess",
    batch: int = DEFAULT_EVAL_BATCH,
    progress: bool = True,
    trust_code: bool = False,
    device: str | None = None,
    **backend_options: Any,
) -> Run:
    """Continue a run folder to its budget without re-evaluating anything it stored
    (`evostitch search --resume`; its precision is the run's); writes RUN/front.csv."""
    opened = load_run(run, trust_code=trust_code)
    spec = opened.config.problem
    problem, _ = problem_from_spec(spec, trust_code=trust_code, device=device)
    runner = make_backend(
        backend,
        spec["supernet"],
        spec["data"],
        batch=batch,
        problem=problem,
        trust_code=trust_code,
        device=device,
        amp=spec.get("amp"),
        subset=spec.get("subset"),
        race=spec,
        **backend_options,
    )
    try:
        result = resume_search(
            opened.path,
            problem,
            lambda c: make_algorithm(c.algorithm, problem, c.seed, **c.params),
            runner,
            progress=progress,
            checkpoint_every=_checkpoint_every(opened.config.budget),
        )
    finally:
        runner.close()
    opened.result = result
    opened.write_front_csv()
    save_race_counts(opened.path, opened.records)
    return opened
