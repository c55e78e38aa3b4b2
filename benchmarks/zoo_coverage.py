"""Which real architectures evostitch stitches, runs and exports: the coverage table.

Every torchvision classification model and a list of timm architectures across
families, each stitched with a partner of another family (torchvision's resnet18, or
mobilenet_v3_small for the ResNet family) at a small input size (the model's own where
it needs one), untrained weights (coverage is about structure, not accuracy):

1. trace and match both parents (seconds, nodes, matched points);
2. both parents exact: the all-zero genotypes equal the eager models (<= 1e-5);
3. random offspring (each switch on with p = 0.1, any output) extract to a GraphModule
   and run, equal to the supernetwork's own forward (<= 1e-5);
4. some of them export (torch.export -> PyTorch code + safetensors), and the export,
   loaded back without evostitch, reproduces them (<= 1e-5 of the largest output).

A model passes when every step passes; a failure keeps its one-line reason. Writes
docs/COVERAGE.md (or --out) with the table, the pass rate and the wall time.

Run: .venv/bin/python benchmarks/zoo_coverage.py [--offspring 20] [--exports 3]
     [--only NAME ...] [--timm-only | --torchvision-only]     (needs evostitch[timm])
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from evostitch.models import load_model
from evostitch.results.export import export_offspring
from evostitch.supernet import Supernet

TOL = 1e-5
SMALL = 64  # input side for models that accept any size
# Models that need a given input size (or a minimum one).
SIZES = {
    "inception_v3": 96,
    "vit_h_14": 70,
    "googlenet": 64,
    "maxvit_t": 224,
    "swin_t": 224,
    "swin_s": 224,
    "swin_b": 224,
    "swin_v2_t": 256,
    "swin_v2_s": 256,
    "swin_v2_b": 256,
}
# torchvision models built smaller than their default (same architecture family).
OPTIONS = {name: "image_size=64" for name in ("vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32")}
OPTIONS["vit_h_14"] = "image_size=70"
TIMM = [
    "resnet18", "resnet50d", "resnext26ts", "seresnext26d_32x4d", "regnetx_002", "regnety_004",
    "efficientnet_b0", "tf_efficientnet_b0", "tf_efficientnet_lite0", "efficientnetv2_rw_t",
    "tf_efficientnetv2_b0", "mobilenetv2_050", "mobilenetv3_small_050", "tf_mobilenetv3_small_100",
    "tf_mobilenetv3_large_075", "mobilenetv4_conv_small", "convnext_atto", "convnextv2_atto",
    "densenet121", "ghostnet_100", "ghostnetv2_100", "mixnet_s", "tf_mixnet_s", "mnasnet_small",
    "fbnetc_100", "hrnet_w18_small", "dla34", "dpn48b", "cspresnet50", "cspdarknet53",
    "repvgg_a0", "rexnet_100", "lcnet_050", "tinynet_e", "vovnet39a", "xception41", "nfnet_l0",
    "vit_tiny_patch16_224", "deit_tiny_patch16_224", "swin_tiny_patch4_window7_224",
    "levit_128s", "efficientformer_l1", "mobilevit_xxs", "poolformer_s12", "convmixer_768_32",
    "coat_lite_tiny", "pit_ti_224", "twins_svt_small", "crossvit_tiny_240", "edgenext_xx_small",
]  # fmt: skip
TIMM_SIZES = {
    "crossvit_tiny_240": 240,
    "efficientformer_l1": 224,
    "levit_128s": 224,
    "swin_tiny_patch4_window7_224": 224,
}
TIMM_OPTIONS = {
    name: f"img_size={SMALL}"
    for name in ("vit_tiny_patch16_224", "deit_tiny_patch16_224", "pit_ti_224", "coat_lite_tiny")
}


@dataclass
class Row:
    model: str
    partner: str
    size: int
    nodes: int = 0
    matches: int = 0
    seconds: float = 0.0
    steps: dict[str, str] = field(default_factory=dict)  # step -> "ok" | reason

    @property
    def passed(self) -> bool:
        return all(v == "ok" for v in self.steps.values()) and len(self.steps) == 4


def reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" [{Path(frames[-1].filename).name}:{frames[-1].lineno}]" if frames else ""
    return f"{type(exc).__name__}: {text[:160]}{where}".replace("|", "/")


def close(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))


def check_model(spec: str, partner: str, size: int, offspring: int, exports: int) -> Row:
    row = Row(spec, partner, size)
    start = time.perf_counter()
    try:
        torch.manual_seed(0)
        model, other = load_model(spec), load_model(partner)
        net = Supernet.build([model, other], (3, size, size))
        row.nodes = len(net.graphs["a"].nodes)
        row.matches = len(net.matches)
        row.steps["trace+match"] = "ok"
    except Exception as exc:
        row.steps["trace+match"] = reason(exc)
        row.seconds = time.perf_counter() - start
        return row
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    zeros = [0] * (len(net.genotype_spec) - 1)
    try:
        with torch.no_grad():
            gaps = [close(net(x, [0, *zeros]), model(x)), close(net(x, [1, *zeros]), other(x))]
        ok = max(gaps) <= TOL
        row.steps["parents exact"] = "ok" if ok else f"differs by {max(gaps):.2g}"
    except Exception as exc:
        row.steps["parents exact"] = reason(exc)
    rng = random.Random(0)
    genotypes = []
    for _ in range(offspring):
        g = [rng.randrange(len(net.output_choices))]
        genotypes.append(tuple(g + [int(rng.random() < 0.1) for _ in zeros]))
    try:
        worst = 0.0
        with torch.no_grad():
            for g in genotypes:
                worst = max(worst, close(net.extract(g)(x), net(x, g)))
        row.steps["offspring run"] = "ok" if worst <= TOL else f"differs by {worst:.2g}"
    except Exception as exc:
        row.steps["offspring run"] = reason(exc)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for k, g in enumerate(genotypes[:exports]):
                export_offspring(net, g, Path(tmp) / str(k))  # checks the reload itself
        row.steps["export"] = "ok"
    except Exception as exc:
        row.steps["export"] = reason(exc)
    row.seconds = time.perf_counter() - start
    return row


def models(args, everything: bool = False) -> list[tuple[str, int]]:
    import torchvision

    found = []
    if everything or not args.timm_only:
        for name in torchvision.models.list_models(module=torchvision.models):
            options = f"?{OPTIONS[name]}" if name in OPTIONS else ""
            found.append((f"torchvision:{name}{options}", SIZES.get(name, SMALL)))
    if everything or not args.torchvision_only:
        for name in TIMM:
            options = f"?{TIMM_OPTIONS[name]}" if name in TIMM_OPTIONS else ""
            found.append((f"timm:{name}{options}", TIMM_SIZES.get(name, SMALL)))
    if args.only and not everything:
        found = [(s, n) for s, n in found if any(o in s for o in args.only)]
    return found


def partner_of(spec: str) -> str:
    family = spec.split(":")[1]
    return (
        "torchvision:mobilenet_v3_small"
        if family.startswith(("resnet", "resnext", "wide_resnet"))
        else "torchvision:resnet18"
    )


def write_table(rows: list[Row], path: Path, args) -> None:
    """The table, with rows of models not run this time kept from `path` (so that
    `--only` reruns some models), sorted as the model list."""
    kept = {}
    if args.only and path.is_file():
        for line in path.read_text().splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) == 8 and cells[0] not in ("model", "---"):
                kept[cells[0]] = line
    lines = {r.model: _line(r) for r in rows}
    table = [lines.get(spec) or kept.get(spec) for spec, _ in models(args, everything=True)]
    table = [line for line in table if line]
    passed = sum(" | pass | " in line for line in table)
    seconds = sum(float(line.split("|")[6]) for line in table)
    head = [
        "# Coverage: the architectures evostitch stitches, runs and exports",
        "",
        f"Written by `benchmarks/zoo_coverage.py --offspring {args.offspring} --exports "
        f"{args.exports}`; torch {torch.__version__.split('+')[0]}, one thread of a 2-core CPU. "
        f"**{passed} of {len(table)} models pass every step "
        f"({100 * passed / max(len(table), 1):.1f}%)**; {seconds / 60:.1f} minutes in all.",
        "",
        "Each model is stitched with a partner of another family at the input size shown, "
        "untrained; a step is ok or gives its one-line reason. Steps: trace+match, both "
        f"parents exact (<= {TOL:g}), random offspring extracted and run (<= {TOL:g}), "
        "offspring exported and reloaded without evostitch (<= 1e-5 of the largest output).",
        "",
        "| model | partner | input | nodes | matched | seconds | status | reason |",
        "|---|---|---|---|---|---|---|---|",
    ]
    path.write_text("\n".join(head + table) + "\n")


def _line(r: Row) -> str:
    failed = [f"{k}: {v}" for k, v in r.steps.items() if v != "ok"]
    status = "pass" if r.passed else "FAIL"
    return (
        f"| {r.model} | {r.partner.split(':')[1]} | {r.size} | {r.nodes} | {r.matches} | "
        f"{r.seconds:.1f} | {status} | {'; '.join(failed)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offspring", type=int, default=20)
    parser.add_argument("--exports", type=int, default=20)
    parser.add_argument(
        "--only", nargs="*", help="substrings of model specs to run (other rows are kept)"
    )
    parser.add_argument("--timm-only", action="store_true")
    parser.add_argument("--torchvision-only", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("docs/COVERAGE.md"))
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.perf_counter()
    rows = []
    todo = models(args)
    for i, (spec, size) in enumerate(todo, 1):
        row = check_model(spec, partner_of(spec), size, args.offspring, args.exports)
        rows.append(row)
        status = (
            "pass"
            if row.passed
            else "FAIL " + "; ".join(f"{k}: {v}" for k, v in row.steps.items() if v != "ok")
        )
        print(f"[{i}/{len(todo)}] {spec} {row.seconds:.1f}s {row.matches} matches {status}",
              flush=True)  # fmt: skip
        write_table(rows, args.out, args)
    passed = sum(r.passed for r in rows)
    print(f"{passed}/{len(rows)} pass ({100 * passed / max(len(rows), 1):.1f}%) in "
          f"{(time.perf_counter() - start) / 60:.1f} min; table in {args.out}")  # fmt: skip


if __name__ == "__main__":
    main()
