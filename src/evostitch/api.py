"""The Python API: one call per command of the CLI, returning objects.

    net = evostitch.stitch(["torchvision:resnet18", "torchvision:mobilenet_v3_small"],
                           (3, 224, 224), data="imagefolder:~/pets", out="runs/sn")
    run = evostitch.search("runs/sn", out="runs/r1", budget=2000)
    run = evostitch.load_run("runs/r1")   # later, or on another machine
    run.front, run.reevaluate("test"), run.export("parent-a", "exported/")

The CLI parses arguments and prints; everything else happens here or below.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import replace
from inspect import signature as _signature
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from .data import check_input_shape
from .devices import check_amp, resolve_device
from .errors import SupernetError
from .evaluation.holding import HOLD_SAMPLES
from .evaluation.racing import DEFAULT_CONFIDENCE
from .evaluation.transitions import load_transitions
from .evolution.algorithms import AUTO, AUTO_RUNS, check_algorithm, make_algorithm
from .evolution.backend import Backend
from .evolution.loop import resume_search, run_search
from .evolution.race_front import save_race_counts
from .evolution.stitching import (
    DEFAULT_FIDELITY,
    ProblemSpec,
    problem_from_spec,
    problem_spec,
    supernet_data,
)
from .evolution.store import RunConfig, RunStore
from .execution import DEFAULT_EVAL_BATCH, Workers, make_backend
from .files import user_path
from .fitting import fit_supernet
from .graph import Graph, example_input, trace
from .inputs import check_data, check_images, input_batches, resolve_data
from .matching import Matching
from .matching import match as match_graphs
from .models import load_model
from .options import (
    check_backend_options,
    check_batch,
    check_leftover,
    check_match_options,
    check_parents,
    check_search_options,
    check_stitch_options,
    run_folder,
    stitch_folder,
)
from .results.run import Run
from .supernet import Supernet

DEFAULT_ALGORITHM = AUTO  # runs `AUTO_RUNS`, recorded as such


def _say(progress: bool):
    console = Console(stderr=True, highlight=False)
    return console.print if progress else (lambda *_, **__: None)


Parent = str | nn.Module


def match(
    parents: Sequence[Parent | Graph],
    input_shape: Sequence[int] | None = None,
    *,
    weights: Sequence[str | Path | None] | None = None,
    data: str | Iterable[torch.Tensor] | None = None,
    similarity: str = "uniform",
    max_ratio: int = 1,
    leaf_modules: Sequence[str] = (),
    time_limit: float | None = None,
    progress: bool = True,
) -> Matching:
    """Match K >= 2 parents' layers into groups without creating cycles (`evostitch
    match`; for two parents, pairs): `evostitch.matching.match`.

    Parents are traced graphs, modules or model specs (then `input_shape` is needed), in
    side order; `weights` (one per parent, None for none) load a spec's weights. CKA
    similarity reads inputs from `data`: input batches, or a dataset spec's training
    split (random inputs without it). `time_limit` bounds a two-parent matching.
    """
    check_match_options(max_ratio, time_limit)
    models, weights = check_parents(parents, weights)
    graphs = []
    for model, w in zip(models, weights, strict=True):
        if not isinstance(model, Graph):
            if input_shape is None:
                raise SupernetError("matching models (not traced graphs) needs input_shape")
            if isinstance(model, str):
                model = load_model(model, w)
            model = trace(model, example_input(input_shape), leaf_modules)
        graphs.append(model)
    shape = input_shape or graphs[0][graphs[0].input].shape[1:]
    batches = data
    if similarity == "cka" and (data is None or isinstance(data, str)):
        batches = input_batches(data, shape, progress=progress)
    return match_graphs(
        graphs,
        similarity=similarity,
        data=batches,
        max_ratio=max_ratio,
        time_limit=time_limit,
    )


def stitch(
    parents: Sequence[Parent],
    input_shape: Sequence[int] | None = None,
    *,
    weights: Sequence[str | Path | None] | None = None,
    data: str | None = None,
    out: str | Path | None = None,
    similarity: str = "uniform",
    max_ratio: int = 1,
    leaf_modules: Sequence[str] = (),
    fit_samples: int | None = None,
    fit_memory: int | None = None,
    steps: int | None = None,
    epochs: float | None = None,
    downstream: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
    device: str | torch.device | None = None,
    amp: str | None = None,
    hold_samples: int = HOLD_SAMPLES,
    keep_poor_stitches: bool = False,
    progress: bool = True,
) -> Supernet:
    """Build a supernetwork, fit its stitches on `data`'s train split and save it into
    `out` (`evostitch stitch`). Without `data` the stitches stay untrained. `parents`
    are K >= 2 specs or modules in side order (a, b, c, ...), `weights` one per parent
    (None for none); they are matched into groups (pairs for two: `Supernet.build`).
    `hold_samples`
    random offspring per p are scored before and after (0: none; `evaluation.holding`),
    then every single crossing (the transition map): stitches whose crossing keeps less
    than `evaluation.transitions.POOR` of the lower parent are left out of every offspring unless
    `keep_poor_stitches` (`Supernet.leave_out`).
    `seed` seeds the stitches' initialisation, the fit's images and the offspring drawn.

    `fit_samples` images fit the stitches by least squares (in passes whose equations
    take at most `fit_memory` MiB), then `steps` (or `epochs`) gradient steps train
    them, then `downstream` steps train all of them together on random offspring toward
    the parents' output (`evostitch.training.downstream`); None takes the library's
    defaults (`evostitch.training.DEFAULT_FIT_SAMPLES`, `DEFAULT_STEPS`,
    `downstream.default_steps`). Options, `out` and the
    data's images are checked before any work; a stitch training interrupted in `out`
    resumes from `out/checkpoints` when every setting is the same (refused otherwise)."""
    say = _say(progress)
    training = {"fit_samples": fit_samples, "fit_memory": fit_memory, "steps": steps}
    training.update(epochs=epochs, downstream=downstream, batch_size=batch_size, seed=seed)
    check_stitch_options(input_shape, max_ratio, hold_samples, training)
    training["fit_memory"] = fit_memory * 2**20 if fit_memory is not None else None  # bytes
    device, amp = resolve_device(device), check_amp(amp)  # before an hour of work, not after
    folder = stitch_folder(out)
    models, weights = check_parents(parents, weights)
    data = resolve_data(data, models, input_shape, progress)
    if data is not None:
        check_input_shape(data, input_shape)
        matching = {"data": data, "similarity": similarity, "max_ratio": max_ratio}
        matching["leaf_modules"] = list(leaf_modules)
        check_leftover(folder, models, input_shape, matching, training)
        check_images(data, ("train", "val"), progress)
    batches = input_batches(data, input_shape, progress=progress) if similarity == "cka" else None
    options = {
        "similarity": similarity,
        "data": batches,
        "max_ratio": max_ratio,
        "leaf_modules": leaf_modules,
        "seed": seed,
    }
    net = Supernet.build(models, input_shape, weights=weights, **options)
    if data is not None:
        check_data(net, data)
    net.data = data  # what `search` evaluates on unless told otherwise
    points = "points" if len(models) == 2 else f"groups of {len(models)} parents"
    say(f"matched {len(net.matches)} {points}: {len(net.genotype_spec)} variables")
    if data is not None:
        fit_supernet(
            net, folder, training, matching, hold_samples, device, amp, say, progress,
            keep_poor=keep_poor_stitches,
        )  # fmt: skip
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
    transitions = None
    if not isinstance(supernet, Supernet):
        transitions = load_transitions(supernet)
        supernet = Supernet.load(supernet, trust_code=trust_code)
    net = supernet
    rng = random.Random(0)
    refs = {
        c: net.cost(g) for c, g in zip(net.output_choices, net.reference_genotypes, strict=True)
    }
    sample = []
    for _ in range(samples):
        g = [rng.randrange(net.genotype_spec[0])]
        for c in net.genotype_spec[1:]:  # a switch on at rate 0.1, at any stitched value
            on = int(rng.random() < 0.1)
            g.append(rng.randrange(1, c) if on and c > 2 else on)
        sample.append({"genotype": net.canonical(g), **net.cost(g), "description": net.describe(g)})
    return {
        "parents": [
            {"side": side, **(spec or {}), **refs[side]}
            for side, spec in zip(net.sides, net.specs, strict=True)
        ],
        "task": net.task,
        "references": refs,
        "matches": [
            {**dict(zip(net.sides, m[:-1], strict=True)), "score": m[-1]} for m in net.matches
        ],
        "variables": len(net.genotype_spec),
        "genotype_spec": net.genotype_spec,
        "offspring_sample": sample,
        "transitions": transitions,
        "left_out": sorted(net.left_out),
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
    population: int = 16,
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
    gpus_per_worker, cpus_per_worker, address (`execution.Workers`); `trust_code`
    rebuilds a parent named by `package.module:factory`; `device` and `amp` ("bf16",
    "fp16": evaluation under autocast, recorded in the run) say how offspring run;
    `val_subset` searches on a seeded subset of that many validation samples (the
    reference searched on 1,000 ImageNet-V2 images), recorded in the run; `fidelity`
    "race" stops offspring early at `confidence` (`evostitch.evaluation.racing`)."""
    check_algorithm(algorithm, auto=True)
    device, amp = resolve_device(device), check_amp(amp)
    check_search_options(budget, seed, population, p_stitch, steer_to, val_subset, batch)
    check_backend_options(backend_options)
    run_folder(out)
    data = data or supernet_data(supernet)
    spec = problem_spec(
        supernet, data, amp=amp, subset=val_subset, fidelity=fidelity, confidence=confidence
    )
    check_images(data, (spec.split,), progress)
    problem, net = problem_from_spec(spec, trust_code=trust_code, device=device)
    check_data(net, data)  # its inputs and classes, before any evaluation
    spec = replace(spec, output_choices=tuple(net.output_choices))  # names its solutions
    if algorithm == AUTO:
        algorithm = AUTO_RUNS
    # the algorithm's budget paces its steering and stays with it (its checkpoint) when a
    # resume raises the run's budget (`RunConfig.budget`, where the search stops)
    params = {"pop_size": population, "budget": budget, "p_stitch": p_stitch, "steer_to": steer_to}
    config = RunConfig(algorithm, budget, seed, params=params, problem=spec.to_dict())
    algo = make_algorithm(algorithm, problem, seed, **params)  # before anything is written
    runner = make_backend(
        backend,
        spec,
        problem=problem,
        batch=batch,
        trust_code=trust_code,
        device=device,
        workers=Workers(**backend_options),
    )
    if population < runner.capacity:  # a generation is all that can run at once
        _say(progress)(
            f"note: population {population} is below the {runner.capacity} evaluations the"
            f" backend runs at once, so some workers will idle (--population {runner.capacity})"
        )
    try:
        with RunStore.create(out, config) as store:
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
    budget: int | None = None,
    backend: str | Backend = "inprocess",
    batch: int = DEFAULT_EVAL_BATCH,
    progress: bool = True,
    trust_code: bool = False,
    device: str | None = None,
    **backend_options: Any,
) -> Run:
    """Continue a run folder to its budget without re-evaluating anything it stored
    (`evostitch search --resume`; its precision is the run's); writes RUN/front.csv.

    `budget` changes the run's budget (at least the evaluations stored, else RunError),
    e.g. to search a finished run further; the algorithm keeps its other settings."""
    check_batch(batch)
    check_backend_options(backend_options)
    opened = load_run(run, trust_code=trust_code)
    spec = ProblemSpec.from_dict(opened.config.problem)
    check_images(spec.data, (spec.split,), progress)
    problem, _ = problem_from_spec(spec, trust_code=trust_code, device=device)
    runner = make_backend(
        backend,
        spec,
        problem=problem,
        batch=batch,
        trust_code=trust_code,
        device=device,
        workers=Workers(**backend_options),
    )
    try:
        result = resume_search(
            opened.path,
            problem,
            lambda c: make_algorithm(c.algorithm, problem, c.seed, **c.params),
            runner,
            budget=budget,
            progress=progress,
            checkpoint_every=_checkpoint_every(budget or opened.config.budget),
        )
    finally:
        runner.close()
    if budget is not None:  # resume_search wrote it to config.json
        opened.config = replace(opened.config, budget=budget)
    opened.result = result
    opened.write_front_csv()
    save_race_counts(opened.path, opened.records)
    return opened


# The settings a run keeps (config.json): `search`'s options that `resume` does not take.
# Given again on resume they would be silently ignored, so the CLI refuses them.
RUN_OWN: tuple[str, ...] = tuple(
    name
    for name in _signature(search).parameters
    if name not in _signature(resume).parameters and name not in ("supernet", "out")
)
