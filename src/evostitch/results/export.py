"""Export an offspring as standalone PyTorch code plus safetensors weights.

The offspring's fx graph is retraced with its stitches inlined, every module and
parameter gets a flat attribute name, and the graph's generated `forward` is written
into a small module file next to its weights::

    OUT/offspring.py          class Offspring(torch.nn.Module) and load(); imports torch only
    OUT/weights.safetensors   the state dict (no pickle)
    OUT/example.safetensors   an input batch and the output it must give
    OUT/offspring.json        where it came from: run, solution, genotype, description
    OUT/offspring.onnx        with onnx=True (needs the onnx and onnxscript packages)

Load it anywhere with torch and safetensors installed::

    import sys; sys.path.insert(0, "OUT"); import offspring; model = offspring.load()

Leaf modules are rebuilt from `torch.nn` by their constructor arguments (their
`extra_repr`); the export checks that the generated module reproduces the offspring.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import fx, nn

from .. import __version__
from ..errors import ExportError
from ..files import absolute, user_path
from ..supernet import Stitch, Supernet, log_probs
from .run import find_solution, genotype_text, load_finetuned, load_supernet, read_run

TOLERANCE = 1e-6


def offspring_module(
    net: Supernet, genotype: tuple[int, ...], weights: dict[str, torch.Tensor] | None = None
) -> fx.GraphModule:
    """A deep copy of the extracted offspring (optionally with fine-tuned `weights`), eval mode."""
    module = copy.deepcopy(net.extract(genotype)).cpu().eval()
    if weights is not None:
        try:
            module.load_state_dict(weights)
        except RuntimeError as exc:
            raise ExportError(f"the weights do not fit this offspring: {exc}") from None
    return module


class _InlineStitches(fx.Tracer):
    """Keeps every module a leaf except stitches, whose few ops are traced inline."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return not isinstance(m, Stitch)


def flatten(module: fx.GraphModule) -> fx.GraphModule:
    """The same computation with stitches inlined and flat attribute names."""
    graph = _InlineStitches(autowrap_functions=(log_probs,)).trace(module)
    root, names = nn.Module(), {}
    for node in graph.nodes:
        if node.op not in ("call_module", "get_attr"):
            continue
        if node.target not in names:
            flat = _unique(re.sub(r"\W", "_", node.target), root)
            names[node.target] = flat
            obj = module.get_submodule(node.target) if node.op == "call_module" else None
            if obj is None:
                *path, leaf = node.target.split(".")
                obj = getattr(module.get_submodule(".".join(path)), leaf)
            if isinstance(obj, nn.Module | nn.Parameter):
                setattr(root, flat, obj)
            else:
                root.register_buffer(flat, obj)
        node.target = names[node.target]
    return fx.GraphModule(root, graph, "Offspring").eval()


def _unique(name: str, root: nn.Module) -> str:
    candidate, k = name, 1
    while hasattr(root, candidate):
        candidate, k = f"{name}_{k}", k + 1
    return candidate


def _constructor(name: str, m: nn.Module) -> str:
    cls = type(m)
    if getattr(nn, cls.__name__, None) is not cls:
        raise ExportError(
            f"cannot export module {name} of type {cls.__module__}.{cls.__qualname__}: "
            "only torch.nn modules can be rebuilt by the generated code"
        )
    return f"torch.nn.{cls.__name__}({m.extra_repr()})"


def _global_definitions(name: str, obj: Any) -> str:
    """Python source that binds `name` to `obj` in the generated module."""
    if obj is torch:
        return ""
    if isinstance(obj, float) and (math.isinf(obj) or math.isnan(obj)):
        return f"{name} = float({str(obj)!r})"
    if obj is type(None):
        return f"{name} = type(None)"
    if inspect.ismodule(obj):
        return f"import {obj.__name__} as {name}"
    module = getattr(obj, "__module__", None) or ""
    qualname = getattr(obj, "__qualname__", "")
    if module.startswith("evostitch") and inspect.isfunction(obj):
        return f"{inspect.getsource(obj).rstrip()}\n\n\n{name} = {obj.__name__}"
    if module and qualname and "<" not in qualname:
        if module == "builtins":
            return f"{name} = {qualname}"
        head, _, rest = qualname.partition(".")
        suffix = f".{rest}" if rest else ""
        return f"from {module} import {head} as _{name}\n{name} = _{name}{suffix}"
    raise ExportError(f"cannot export a graph that uses {name} ({obj!r})")


def generate_code(flat: fx.GraphModule, docstring: str, input_shape: tuple[int, ...]) -> str:
    """Source of a module file defining `Offspring` and `load()` for `flat`."""
    code = flat.graph.python_code("self")
    body = [line for line in code.src.splitlines() if not line.startswith("torch.fx._symbolic")]
    used = {n: v for n, v in code.globals.items() if re.search(rf"\b{re.escape(n)}\b", code.src)}
    defs = [d for d in (_global_definitions(n, v) for n, v in sorted(used.items())) if d]
    init = [f"        self.{n} = {_constructor(n, m)}" for n, m in flat.named_children()]
    for n, p in flat.named_parameters(recurse=False):
        init.append(f"        self.{n} = torch.nn.Parameter({_empty(p)})")
    for n, b in flat.named_buffers(recurse=False):
        init.append(f"        self.register_buffer({n!r}, {_empty(b)})")
    forward = "\n".join(f"    {line}".rstrip() for line in body).strip("\n")
    return TEMPLATE.format(
        docstring=docstring.strip(),
        definitions="".join(f"{d}\n\n\n" for d in defs),
        input_shape=tuple(input_shape),
        init="\n".join(init) or "        pass",
        forward=forward,
    )


def _empty(t: torch.Tensor) -> str:
    return f"torch.empty({tuple(t.shape)}, dtype={t.dtype})"


TEMPLATE = '''"""{docstring}

Needs torch and safetensors only. Usage::

    import offspring
    model = offspring.load()  # weights.safetensors beside this file, eval mode
    out = model(x)            # x: float tensor [N, *INPUT_SHAPE]
"""

from pathlib import Path

import torch
from safetensors.torch import load_file


{definitions}INPUT_SHAPE = {input_shape}


class Offspring(torch.nn.Module):
    """The offspring network; its forward was generated from the traced graph."""

    def __init__(self) -> None:
        super().__init__()
{init}

{forward}


def load(weights=None, device="cpu") -> Offspring:
    """The offspring in eval mode with its weights (default: weights.safetensors here)."""
    path = Path(weights) if weights else Path(__file__).with_name("weights.safetensors")
    model = Offspring()
    model.load_state_dict(load_file(str(path), device=str(device)))
    return model.to(device).eval()
'''


def import_file(path: Path) -> Any:
    """Import a generated module file under a private name."""
    name = f"_evostitch_export_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def export_offspring(
    net: Supernet,
    genotype: tuple[int, ...],
    out: str | Path,
    *,
    weights: dict[str, torch.Tensor] | None = None,
    meta: dict[str, Any] | None = None,
    onnx: bool = False,
) -> list[Path]:
    """Write the offspring into `out` (see the module docstring); return the files written."""
    if onnx:
        _need_onnx()
    out = user_path(out)
    out.mkdir(parents=True, exist_ok=True)
    net = net.cpu().eval()
    module = offspring_module(net, genotype, weights)
    flat = flatten(module)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, *net.input_shape, generator=gen)
    with torch.no_grad():
        expected = net(x, genotype) if weights is None else module(x)
    meta = {"format": "evostitch-offspring", "evostitch": __version__, **(meta or {})}
    meta |= {"genotype": genotype_text(genotype), "description": net.describe(genotype)}
    meta |= {"input_shape": list(net.input_shape), "task": net.task}
    docstring = f"Offspring {meta.get('solution', '')} exported by evostitch {__version__}.\n\n"
    docstring += f"Genotype description: {meta['description']}"
    files = {
        "code": out / "offspring.py",
        "weights": out / "weights.safetensors",
        "example": out / "example.safetensors",
        "meta": out / "offspring.json",
    }
    files["code"].write_text(generate_code(flat, docstring, net.input_shape))
    state = {k: v.detach().cpu().contiguous().clone() for k, v in flat.state_dict().items()}
    save_file(state, str(files["weights"]))
    save_file({"input": x, "output": expected.contiguous()}, str(files["example"]))
    check(files["code"], x, expected)
    if onnx:
        files["onnx"] = export_onnx(flat, x, out / "offspring.onnx")
    meta["files"] = {k: p.name for k, p in files.items()}
    files["meta"].write_text(json.dumps(meta, indent=1))
    return list(files.values())


def check(code: Path, x: torch.Tensor, expected: torch.Tensor) -> float:
    """Load the generated module and compare its output with `expected`; return the gap."""
    model = import_file(code).load(code.with_name("weights.safetensors"))
    with torch.no_grad():
        gap = float((model(x) - expected).abs().max())
    if not gap <= TOLERANCE:
        raise ExportError(f"the exported module differs from the offspring by {gap:.3g}")
    return gap


def export_onnx(module: nn.Module, x: torch.Tensor, path: Path) -> Path:
    """ONNX export with a dynamic batch size (torch.export-based exporter)."""
    _need_onnx()
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(module, (x,), str(path), dynamic_shapes=({0: batch},), external_data=False)
    return path


def export_solution(
    run: str | Path, solution: str, out: str | Path, *, finetuned: bool = False, onnx: bool = False
) -> list[Path]:
    """Export the run's solution `solution` (row id or reference name) into `out`."""
    config, records = read_run(run)
    net = load_supernet(config)
    found = find_solution(net, records, solution)
    weights = load_finetuned(run, found.label) if finetuned else None
    meta = {"run": str(absolute(run)), "solution": found.label, "id": found.id}
    meta |= {"finetuned": finetuned, "data": config.problem.get("data")}
    return export_offspring(net, found.genotype, out, weights=weights, meta=meta, onnx=onnx)


def _need_onnx() -> None:
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"--onnx needs the {' and '.join(missing)} package(s): pip install them")
