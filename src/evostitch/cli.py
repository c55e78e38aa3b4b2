"""The `evostitch` command line: a thin layer over the library."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .demo import DEMO_STITCH_EPOCHS
from .errors import EvostitchError
from .paths import expand_user

app = typer.Typer(
    help="Recombine trained networks by stitching, then search their offspring.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

SpecA = Annotated[str, typer.Option("--a", help="Parent A, e.g. torchvision:resnet50.")]
SpecB = Annotated[str, typer.Option("--b", help="Parent B, e.g. torchvision:resnext50_32x4d.")]
WeightsA = Annotated[
    Path | None,
    typer.Option(
        "--a-weights", help="Weights of A (.safetensors or state dict).", callback=expand_user
    ),
]
WeightsB = Annotated[
    Path | None, typer.Option("--b-weights", help="Weights of B.", callback=expand_user)
]
InputShape = Annotated[str, typer.Option("--input-shape", help="One input's shape: C,H,W.")]
Data = Annotated[
    str | None,
    typer.Option("--data", help="Dataset spec for real inputs (e.g. mnist5k); random if absent."),
]
Similarity = Annotated[
    str, typer.Option("--similarity", help="Pair weights: uniform (paper) or cka (needs data).")
]
MaxRatio = Annotated[
    int,
    typer.Option("--max-ratio", help="Allow feature maps whose sizes differ up to this factor."),
]
Leaf = Annotated[
    list[str] | None,
    typer.Option("--leaf-module", help="Module class or path to keep opaque when tracing."),
]


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(v <= 0 for v in shape):
        raise EvostitchError(f"bad --input-shape {text!r}: expected positive ints like 3,224,224")
    return shape


def _batches(data: str | None, shape: tuple[int, ...], n: int = 32, batch: int = 16):
    """Input batches: from a dataset's training split, or random with a note."""
    import torch

    if data is None:
        console.print("[yellow]no --data given: using random inputs[/yellow]")
        gen = torch.Generator().manual_seed(0)
        return [torch.randn(batch, *shape, generator=gen) for _ in range(n // batch)]
    from .data import load_dataset

    dataset = load_dataset(data, "train")
    images = torch.stack([dataset[i][0] for i in range(min(n, len(dataset)))])
    if tuple(images.shape[1:]) != shape:
        raise EvostitchError(f"{data} gives inputs of shape {tuple(images.shape[1:])}, not {shape}")
    return list(images.split(batch))


@app.command()
def match(
    a: SpecA,
    b: SpecB,
    input_shape: InputShape,
    a_weights: WeightsA = None,
    b_weights: WeightsB = None,
    data: Data = None,
    similarity: Similarity = "uniform",
    max_ratio: MaxRatio = 1,
    leaf_module: Leaf = None,
    time_limit: Annotated[float | None, typer.Option(help="Seconds for the matching.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON to stdout.")] = False,
) -> None:
    """Trace two parents and match their layers without creating cycles."""
    from .graph import trace
    from .matching import match as match_graphs
    from .specs import load_model
    from .supernet import example_input

    shape = parse_shape(input_shape)
    start = time.perf_counter()
    example = example_input(shape)
    graphs = [
        trace(load_model(spec, w), example, leaf_module or ())
        for spec, w in ((a, a_weights), (b, b_weights))
    ]
    batches = _batches(data, shape) if similarity == "cka" else None
    if similarity == "uniform" and data is None:
        console.print("[dim]uniform weights: no data needed[/dim]")
    result = match_graphs(
        graphs[0],
        graphs[1],
        similarity=similarity,
        data=batches,
        max_ratio=max_ratio,
        time_limit=time_limit,
    )
    seconds = time.perf_counter() - start
    report = {
        "a": a,
        "b": b,
        "candidates": {"a": len(graphs[0].candidates()), "b": len(graphs[1].candidates())},
        "matches": [{"a": x, "b": y, "score": s} for x, y, s in result.pairs],
        "total": result.total,
        "optimal": result.optimal,
        "seconds": {"weights": result.weight_seconds, "matching": result.seconds, "all": seconds},
    }
    if as_json:
        print(json.dumps(report, indent=1))
        return
    table = Table("A node", "B node", "score", title=f"{len(result.pairs)} matches")
    for x, y, s in result.pairs:
        table.add_row(x, y, f"{s:.3f}")
    Console().print(table)
    Console().print(
        f"candidates: A {report['candidates']['a']}, B {report['candidates']['b']}; "
        f"total {result.total:.3f} ({'optimal' if result.optimal else 'time limit hit'}); "
        f"weights {result.weight_seconds:.1f}s, matching {result.seconds:.1f}s, all {seconds:.1f}s"
    )


@app.command()
def stitch(
    a: SpecA,
    b: SpecB,
    input_shape: InputShape,
    out: Annotated[
        Path,
        typer.Option("--out", help="Folder to write the supernetwork to.", callback=expand_user),
    ],
    a_weights: WeightsA = None,
    b_weights: WeightsB = None,
    data: Data = None,
    similarity: Similarity = "uniform",
    max_ratio: MaxRatio = 1,
    leaf_module: Leaf = None,
    epochs: Annotated[
        float, typer.Option(help="Stitch-training epochs over --data's train split (0: none).")
    ] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Stitch-training batch size.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of the stitch training.")] = 0,
) -> None:
    """Build a supernetwork (match, insert stitches, train them on --data) and save it."""
    from .supernet import Supernet

    shape = parse_shape(input_shape)
    _refuse_finished(out, "supernet.json")
    batches = _batches(data, shape) if similarity == "cka" else None
    net = Supernet.build(
        a,
        b,
        shape,
        weights_a=a_weights,
        weights_b=b_weights,
        similarity=similarity,
        data=batches,
        max_ratio=max_ratio,
        leaf_modules=leaf_module or (),
    )
    net.data = data  # what `search` evaluates on unless told otherwise
    console.print(f"matched {len(net.matches)} points: {len(net.genotype_spec)} variables")
    if data is not None and epochs > 0:
        from .data import load_dataset
        from .training import train_stitches

        result = train_stitches(
            net,
            load_dataset(data, "train"),
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            checkpoint_dir=out / "checkpoints",
        )
        out.mkdir(parents=True, exist_ok=True)
        result.save(out / "stitch_losses.json")
    elif data is None:
        console.print("[yellow]no --data: stitches are untrained[/yellow]")
    net.save(out)
    console.print(f"supernetwork saved to {out}")


def _refuse_finished(folder: Path, marker: str) -> None:
    if (folder / marker).exists():
        raise EvostitchError(f"{folder} already holds a finished result: choose another --out")


@app.command()
def inspect(
    folder: Annotated[
        Path, typer.Argument(help="A saved supernetwork folder.", callback=expand_user)
    ],
    samples: Annotated[int, typer.Option(help="Random offspring to cost.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON to stdout.")] = False,
) -> None:
    """Parents, matches, variables and the cost of a sample of offspring."""
    import random

    from .supernet import Supernet

    net = Supernet.load(folder)
    rng = random.Random(0)
    refs = {
        c: net.cost(g) for c, g in zip(net.output_choices, net.reference_genotypes, strict=True)
    }
    sample = []
    for _ in range(samples):
        g = [rng.randrange(net.genotype_spec[0])]
        g += [int(rng.random() < 0.1) for _ in net.genotype_spec[1:]]
        sample.append({"genotype": net.canonical(g), **net.cost(g), "description": net.describe(g)})
    report = {
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
    if as_json:
        print(json.dumps(report, indent=1))
        return
    out = Console()
    for p in report["parents"]:
        out.print(
            f"parent {p['side'].upper()}: {p.get('spec')}  {p['macs'] / 1e6:.2f} MMACs, "
            f"{p['params'] / 1e6:.2f} M params"
        )
    out.print(
        f"task {net.task}; {len(net.matches)} matched points; {len(net.genotype_spec)} "
        "variables (output switch first)"
    )
    table = Table("MMACs", "M params", "offspring", title="sample of offspring")
    for row in sample:
        table.add_row(
            f"{row['macs'] / 1e6:.2f}", f"{row['params'] / 1e6:.2f}", row["description"][:100]
        )
    out.print(table)


ALGORITHM_HELP = "rs (random search), ga, gomea, lk-gomea (kernel GOMEA) or nsga2."
DEFAULT_ALGORITHM = "lk-gomea"
DEFAULT_EVAL_BATCH = 8  # offspring evaluated together share their common computation


@app.command()
def search(
    supernet: Annotated[
        Path | None,
        typer.Argument(
            help="A saved supernetwork folder (not with --resume).", callback=expand_user
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="New run folder.", callback=expand_user)
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume", help="Continue this run folder after a crash.", callback=expand_user
        ),
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="Dataset spec; default: the one the stitches trained on.")
    ] = None,
    algorithm: Annotated[str, typer.Option(help=ALGORITHM_HELP)] = DEFAULT_ALGORITHM,
    budget: Annotated[
        int, typer.Option(help="Evaluations to perform (cache hits are free).")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the search.")] = 0,
    population: Annotated[int, typer.Option(help="Population size.")] = 64,
    p_stitch: Annotated[
        float, typer.Option(help="Initial probability that a switch takes the stitched input.")
    ] = 0.02,
    steer_to: Annotated[
        float,
        typer.Option(help="Final floor on the metric, rising from 0 over the budget (0: none)."),
    ] = 0.5,
    backend: Annotated[str, typer.Option(help="inprocess (default) or ray.")] = "inprocess",
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster: auto or HOST:PORT; local Ray if absent.")
    ] = None,
    workers: Annotated[int, typer.Option(help="Ray workers.")] = 2,
    gpus_per_worker: Annotated[float, typer.Option(help="GPU share per Ray worker.")] = 0.0,
    cpus_per_worker: Annotated[float, typer.Option(help="CPUs per Ray worker.")] = 1.0,
    batch: Annotated[
        int,
        typer.Option(
            help="Offspring a worker evaluates together, computing what they share once "
            "(1: one at a time)."
        ),
    ] = DEFAULT_EVAL_BATCH,
) -> None:
    """Search a supernetwork's offspring for accuracy (or mIoU) against MACs; the run
    folder keeps every evaluation and the front (front.csv)."""
    from .search.algorithms import ALGORITHMS

    if batch < 1:
        raise EvostitchError("need --batch >= 1")
    if resume is not None:
        if supernet is not None or out is not None:
            raise EvostitchError("--resume takes the run folder alone (no SUPERNET or --out)")
        result = _resume(
            resume, backend, ray_address, workers, gpus_per_worker, cpus_per_worker, batch
        )
        folder = resume
    else:
        if supernet is None or out is None:
            raise EvostitchError("give a SUPERNET folder and --out RUN (or --resume RUN)")
        if algorithm not in ALGORITHMS:
            raise EvostitchError(f"unknown --algorithm {algorithm!r}: {ALGORITHM_HELP}")
        if budget < 1 or population < 2 or not 0 <= p_stitch <= 1 or not 0 <= steer_to <= 1:
            raise EvostitchError(
                "need --budget >= 1, --population >= 2, 0 <= --p-stitch <= 1, 0 <= --steer-to <= 1"
            )
        if data is None:
            _supernet_data(supernet)  # a missing or unsaved folder fails here, in one line
        result = run_stitch_search(
            supernet,
            out,
            data=data,
            algorithm=algorithm,
            budget=budget,
            seed=seed,
            population=population,
            p_stitch=p_stitch,
            steer_to=steer_to,
            backend=_backend(
                backend,
                supernet,
                data,
                ray_address,
                workers,
                gpus_per_worker,
                cpus_per_worker,
                batch,
            ),
            batch=batch,
        )
        folder = out
    _print_search(result, folder, _write_front(folder))


def run_stitch_search(
    supernet,
    out,
    *,
    data,
    algorithm,
    budget,
    seed,
    population,
    p_stitch,
    steer_to: float = 0.5,
    backend=None,
    batch: int = 1,
    progress: bool = True,
):
    """Start a search run in `out` (used by `search` and `demo`); closes `backend`.

    Without a `backend`, evaluations run in this process, `batch` at a time.
    """
    from .problem import problem_from_spec, problem_spec
    from .search.algorithms import make_algorithm
    from .search.loop import run_search
    from .search.store import RunConfig, RunStore

    params = {"pop_size": population, "budget": budget, "p_stitch": p_stitch, "steer_to": steer_to}
    try:
        data = data or _supernet_data(supernet)
        spec = problem_spec(supernet, data)
        problem, _ = problem_from_spec(spec)
        config = RunConfig(
            algorithm=algorithm, budget=budget, seed=seed, params=params, problem=spec
        )
        backend = backend or _in_process(problem, batch)
        with RunStore.create(out, config) as store:
            algo = make_algorithm(algorithm, problem, seed, **params)
            every = _checkpoint_every(budget)
            return run_search(
                problem, algo, store, backend, budget, progress=progress, checkpoint_every=every
            )
    finally:
        if backend is not None:
            backend.close()


def _checkpoint_every(budget: int) -> int:
    """Checkpoint every 100 evaluations, or every tenth of a smaller budget."""
    return max(1, min(100, budget // 10))


def _write_front(folder: Path) -> Path:
    """The stored front and the reference solutions as `folder`/front.csv."""
    from .report import write_front_csv
    from .search.store import RunStore

    with RunStore.open(folder, readonly=True) as store:
        records = list(store.records())
    return write_front_csv(records, Path(folder) / "front.csv")


def _supernet_data(supernet: Path) -> str:
    meta_path = Path(supernet) / "supernet.json"
    try:
        data = json.loads(meta_path.read_text()).get("data")
    except (OSError, ValueError) as exc:
        raise EvostitchError(f"{supernet} is not a saved supernetwork") from exc
    if not data:
        raise EvostitchError(f"{supernet} records no dataset: pass --data")
    return data


def _in_process(problem, batch: int):
    from .backends import InProcessBackend

    return InProcessBackend(lambda: problem.evaluate, batch, pipeline=True)


def _backend(kind, supernet, data, address, workers, gpus, cpus, batch=1):
    """A Ray backend, each worker taking `batch` genotypes at once; None for inprocess."""
    if kind == "inprocess":
        return None
    if kind != "ray":
        raise EvostitchError(f"unknown --backend {kind!r}: inprocess or ray")
    from .backends.ray_backend import RayBackend
    from .problem import evaluator_factory

    factory = evaluator_factory(supernet, data or _supernet_data(supernet))
    return RayBackend(
        factory,
        num_workers=workers,
        num_gpus=gpus,
        num_cpus=cpus,
        address=address,
        per_worker=batch,
    )


def _resume(folder, kind, address, workers, gpus, cpus, batch=1):
    from .problem import problem_from_spec
    from .search.algorithms import make_algorithm
    from .search.loop import resume_search
    from .search.store import RunStore

    with RunStore.open(folder, readonly=True) as store:
        config = store.config
    spec = config.problem
    problem, _ = problem_from_spec(spec)
    backend = _backend(kind, spec["supernet"], spec["data"], address, workers, gpus, cpus, batch)
    backend = backend or _in_process(problem, batch)
    try:
        return resume_search(
            folder,
            problem,
            lambda c: make_algorithm(c.algorithm, problem, c.seed, **c.params),
            backend,
            checkpoint_every=_checkpoint_every(config.budget),
        )
    finally:
        backend.close()


def _print_search(result, folder: Path, front_csv: Path | None = None) -> None:
    out = Console()
    out.print(
        f"{result.performed} evaluations performed, {result.cache_hits + result.memo_hits} "
        f"known networks skipped ({result.memo_hits} by the algorithm's memo, "
        f"{result.cache_hits} by the run's cache), {result.failed} failed; "
        f"stopped: {result.stopped}; run in {folder}"
    )
    table = Table("metric", "MMACs", "genotype (stitched switches)", title="front")
    for r in sorted(result.front, key=lambda r: r.objectives[1]):
        on = [i for i, v in enumerate(r.canonical) if v and i > 0]
        table.add_row(
            f"{-r.objectives[0]:.4f}",
            f"{r.objectives[1] / 1e6:.3f}",
            f"out={r.canonical[0]} switches={on}",
        )
    out.print(table)
    if front_csv is not None:
        out.print(f"front and reference solutions: {front_csv}")


TASKS = ("classification", "segmentation")


@app.command()
def demo(
    task: Annotated[str, typer.Option(help="classification (MNIST) or segmentation (nuclei).")] = (
        "classification"
    ),
    out: Annotated[Path, typer.Option("--out", help="Output folder.", callback=expand_user)] = Path(
        "evostitch-demo"
    ),
    algorithm: Annotated[str, typer.Option(help=ALGORITHM_HELP)] = DEFAULT_ALGORITHM,
    budget: Annotated[int, typer.Option(help="Offspring evaluations in the search.")] = 250,
    epochs: Annotated[float, typer.Option(help="Stitch-training epochs.")] = DEMO_STITCH_EPOCHS,
    population: Annotated[int, typer.Option(help="Search population size.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed of stitch training and search.")] = 0,
    cache: Annotated[
        Path | None, typer.Option(help="Where trained parents are cached.", callback=expand_user)
    ] = None,
    threads: Annotated[
        int, typer.Option(help="CPU threads for torch (0: torch's default; small models: 1).")
    ] = 1,
) -> None:
    """Train two small parents on bundled real data, stitch them, search, report
    (about 3 minutes on two CPU cores with the parents cached, 1-2 more to train them)."""
    from .demo import run_demo

    if task not in TASKS:
        raise EvostitchError(f"unknown --task {task!r}: classification or segmentation")
    if budget < 1 or epochs < 0 or population < 2 or threads < 0:
        raise EvostitchError(
            "need --budget >= 1, --epochs >= 0, --population >= 2 and --threads >= 0"
        )
    summary = run_demo(
        task,
        out,
        algorithm=algorithm,
        budget=budget,
        epochs=epochs,
        population=population,
        seed=seed,
        cache_dir=cache,
        threads=threads or None,
    )
    _print_summary(summary)


def _print_summary(summary: dict) -> None:
    out = Console()
    metric = summary["metric"]
    title = f"evostitch demo ({summary['task']})"
    table = Table("", f"validation {metric}", f"test {metric}", "MMACs", title=title)
    rows = {**summary["references"], "best offspring": summary["best"]}
    for name, row in rows.items():
        table.add_row(
            name, f"{row['metric']:.4f}", f"{row['test_metric']:.4f}", f"{row['macs'] / 1e6:.3f}"
        )
    out.print(table)
    best = summary["best"]
    where = "on the front" if best["on_front"] else "dominated, not on the front"
    out.print(f"best offspring ({where}): {best['description']}", soft_wrap=True)
    out.print(
        f"front: {summary['front_size']} networks, {summary['front_stitched']} of them "
        f"stitched offspring; {summary['evaluations']} evaluations; "
        f"{summary['seconds']:.0f} s in all. Files:"
    )
    for name, path in summary["files"].items():
        out.print(f"  {name}: {path}", soft_wrap=True, highlight=False)


def _register_result_commands() -> None:
    from .results_cli import register

    register(app)


_register_result_commands()


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    from .allocator import keep_freed_memory

    keep_freed_memory()
    try:
        app()
    except EvostitchError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
