"""Export an offspring as standalone PyTorch code plus safetensors weights.

The offspring is captured with `torch.export` (dynamic batch size) down to torch's own
operators, so any architecture that runs exports the same way: no module has to be
rebuilt from its constructor arguments. Its parameters and buffers get flat attribute
names, and the graph's generated `forward` is written into a small module file next to
its weights::

    OUT/offspring.py          class Offspring(torch.nn.Module) and load(); imports torch only
    OUT/weights.safetensors   the state dict (no pickle)
    OUT/example.safetensors   an input batch and the output it must give
    OUT/offspring.json        where it came from: run, solution, genotype, description
    OUT/offspring.onnx        with onnx=True (needs the onnx and onnxscript packages)

Load it anywhere with torch and safetensors installed::

    import sys; sys.path.insert(0, "OUT"); import offspring; model = offspring.load()

The export checks that the generated module, loaded back, reproduces the offspring
(within 1e-5 of its largest output).
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
from ..files import absolute, save_output, writable_folder
from ..supernet import Supernet
from .solutions import find_solution, genotype_text, load_finetuned, load_supernet, read_run

TOLERANCE = 1e-5  # relative to the largest output (at least 1)


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


def _dynamic_batch() -> tuple[dict[int, Any]]:
    """The input's first dimension left dynamic. Its max is finite: torch 2.5 guards
    `batch != 2**63 - 1` on slices, which an unbounded dimension never satisfies."""
    return ({0: torch.export.Dim("batch", min=1, max=2**20)},)


def lower(module: nn.Module, x: torch.Tensor) -> fx.GraphModule:
    """`module` as a GraphModule of torch operators whose parameters and buffers are flat
    attributes (torch.export, the batch size left dynamic); it returns one tensor."""
    from torch.export.graph_signature import InputKind

    try:
        program = torch.export.export(module, (x,), dynamic_shapes=_dynamic_batch(), strict=False)
    except Exception as exc:
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ExportError(f"torch.export cannot capture this offspring: {why}") from None
    graph, root = copy.deepcopy(program.graph_module.graph), nn.Module()
    values = {**program.state_dict, **program.constants}
    lifted = {
        spec.arg.name: values[spec.target]
        for spec in program.graph_signature.input_specs
        if spec.kind != InputKind.USER_INPUT
    }
    for node in list(graph.nodes):
        if node.op == "placeholder" and node.name in lifted:
            value = lifted[node.name]
            if isinstance(value, nn.Parameter):
                root.register_parameter(node.name, nn.Parameter(value.detach(), False))
            else:
                root.register_buffer(node.name, value)
            with graph.inserting_before(node):
                node.replace_all_uses_with(graph.get_attr(node.name))
            graph.erase_node(node)
    output = next(n for n in graph.nodes if n.op == "output")
    if isinstance(output.args[0], tuple | list) and len(output.args[0]) == 1:
        output.args = (output.args[0][0],)
    graph.eliminate_dead_code()
    return fx.GraphModule(root, graph, "Offspring").eval()


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
    """Source of a module file defining `Offspring` and `load()` for `flat` (see `lower`)."""
    code = flat.graph.python_code("self")
    body = [line for line in code.src.splitlines() if not line.startswith("torch.fx._symbolic")]
    used = {n: v for n, v in code.globals.items() if re.search(rf"\b{re.escape(n)}\b", code.src)}
    defs = [d for d in (_global_definitions(n, v) for n, v in sorted(used.items())) if d]
    init = [
        f"        self.{n} = torch.nn.Parameter({_empty(p)}, requires_grad=False)"
        for n, p in flat.named_parameters(recurse=False)
    ]
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
    out = writable_folder(out, "export folder")
    net = net.cpu().eval()
    module = offspring_module(net, genotype, weights)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, *net.input_shape, generator=gen)
    flat = lower(module, x)
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
    code = generate_code(flat, docstring, net.input_shape)
    _make_folder(out)
    save_output(files["code"], lambda tmp: Path(tmp).write_text(code, encoding="utf-8"))
    state = {k: v.detach().cpu().contiguous().clone() for k, v in flat.state_dict().items()}
    save_output(files["weights"], lambda tmp: save_file(state, tmp))
    example = {"input": x, "output": expected.contiguous()}
    save_output(files["example"], lambda tmp: save_file(example, tmp))
    check(files["code"], x, expected)
    if onnx:
        files["onnx"] = export_onnx(module, x, out / "offspring.onnx")
    meta["files"] = {k: p.name for k, p in files.items()}
    text = json.dumps(meta, indent=1)
    save_output(files["meta"], lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return list(files.values())


def _make_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create {out} ({e.strerror})") from None


def check(code: Path, x: torch.Tensor, expected: torch.Tensor) -> float:
    """Load the generated module and compare its output with `expected`; return the gap."""
    model = import_file(code).load(code.with_name("weights.safetensors"))
    with torch.no_grad():
        gap = float((model(x) - expected).abs().max())
    if not gap <= TOLERANCE * max(1.0, float(expected.abs().max())):
        raise ExportError(f"the exported module differs from the offspring by {gap:.3g}")
    return gap


def export_onnx(module: nn.Module, x: torch.Tensor, path: Path) -> Path:
    """ONNX export with a dynamic batch size (torch.export-based exporter)."""
    _need_onnx()
    return save_output(
        path,
        lambda tmp: torch.onnx.export(
            module, (x,), tmp, dynamic_shapes=_dynamic_batch(), external_data=False
        ),
    )


def export_solution(
    run: str | Path,
    solution: str,
    out: str | Path,
    *,
    finetuned: bool = False,
    onnx: bool = False,
    trust_code: bool = False,
) -> list[Path]:
    """Export the run's solution `solution` (row id or reference name) into `out`."""
    writable_folder(out, "export folder")  # before any work
    config, records = read_run(run)
    net = load_supernet(config, trust_code=trust_code)
    found = find_solution(net, records, solution)
    weights = load_finetuned(run, found.label) if finetuned else None
    meta = {"run": str(absolute(run)), "solution": found.label, "id": found.id}
    meta |= {"finetuned": finetuned, "data": config.problem.get("data")}
    return export_offspring(net, found.genotype, out, weights=weights, meta=meta, onnx=onnx)


def _need_onnx() -> None:
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"--onnx needs the {' and '.join(missing)} package(s): pip install them")
