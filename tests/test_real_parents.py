"""Real parents: pretrained specs through the libraries' caches (offline here), weights kept
in the supernetwork's folder, folders that never run code on open, timm models that need
timm's own fx rules, and a ViT pair, stitched and exported."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from evostitch import ModelError, Supernet
from evostitch.models import load_model
from evostitch.results.export import export_offspring

pytestmark = pytest.mark.slow


def run_cli(*args: str, env: dict | None = None, offline_torch_hub: bool = False):
    """`evostitch ARGS` in a new process; with `offline_torch_hub`, torch's downloads fail
    as they do without a network (so the test never needs, nor uses, one)."""
    prelude = ""
    if offline_torch_hub:
        prelude = (
            "import torch.hub, urllib.error\n"
            "def offline(*a, **k):\n"
            "    raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')\n"
            "torch.hub.download_url_to_file = offline\n"
        )
    code = f"{prelude}import sys\nsys.argv = ['evostitch', *{list(args)!r}]\n"
    code += "from evostitch.cli import main\nmain()\n"
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env
    )


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr[-2000:]

    # torch 2.6 and to stdout after: it is torch's line, not ours
    lines = [
        line
        for line in done.stderr.splitlines()
        if line.strip() and not line.startswith('Downloading: "')
    ]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    return lines[0]


def test_torchvision_pretrained_offline_is_one_line(tmp_path):
    done = run_cli(
        "match",
        "--a", "torchvision:resnet18?weights=IMAGENET1K_V1",
        "--b", "torchvision:mobilenet_v3_small",
        "--input-shape", "3,32,32",
        env={"TORCH_HOME": str(tmp_path / "torch")},
        offline_torch_hub=True,
    )  # fmt: skip
    line = one_error_line(done)
    assert "pretrained weights of torchvision:resnet18" in line and "--a-weights" in line


def test_timm_and_hub_pretrained_offline_are_one_line(tmp_path):
    pytest.importorskip("timm")
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    for spec in ("timm:resnet18?pretrained=true", "hf-hub:timm/resnet18.a1_in1k"):
        done = run_cli(
            "match", "--a", spec, "--b", "torchvision:resnet18", "--input-shape", "3,32,32",
            env=env,
        )  # fmt: skip
        line = one_error_line(done)
        assert "pretrained weights" in line and "offline" in line, line


def test_torchvision_pretrained_from_the_cache_without_pickle(tmp_path, monkeypatch):
    """A weights file in torch's hub cache is used (read with weights_only=True); a file
    that needs unpickling of code is refused in one line."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(1)
    trained = load_model("torchvision:resnet18")
    torch.save(trained.state_dict(), cache / "resnet18-f37072fd.pth")
    model = load_model("torchvision:resnet18?weights=IMAGENET1K_V1")
    for (k, a), b in zip(trained.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    torch.save({"model": Path("/")}, cache / "resnet18-f37072fd.pth")  # a pickled object
    with pytest.raises(ModelError, match="pretrained weights"):
        load_model("torchvision:resnet18?weights=IMAGENET1K_V1")


def test_supernet_keeps_its_parents_weights(tmp_path):
    torch.manual_seed(0)
    weights = {}
    for side, name in (("a", "resnet_like"), ("b", "mobilenet_like")):
        model = load_model(f"demo:{name}")
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.1)
        weights[side] = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights[side]))
    net = Supernet.build(
        ["demo:resnet_like", "demo:mobilenet_like"],
        (1, 8, 8),
        weights=[weights["a"], weights["b"]],
    )
    folder = net.save(tmp_path / "sn")
    for path in weights.values():
        path.unlink()  # the source files are gone: the folder must not need them
    loaded = Supernet.load(folder)
    for k, v in net.parents.state_dict().items():
        assert torch.equal(v, loaded.parents.state_dict()[k]), k
    meta = json.loads((folder / "supernet.json").read_text())
    assert all(len(p["weights_sha256"]) == 64 for p in meta["parents"])
    stored = load_file(str(folder / "parents.safetensors"))  # a changed file is refused
    stored = {k: v + 1 for k, v in stored.items()}
    save_file(stored, str(folder / "parents.safetensors"))
    with pytest.raises(Exception, match="damaged or truncated"):
        Supernet.load(folder)


EVIL = """
from pathlib import Path
Path({marker!r}).write_text("imported")

def build(**options):
    Path({marker!r}).write_text("called")
    from evostitch.models import load_model
    return load_model("demo:resnet_like")
"""


def test_a_folder_never_runs_the_code_it_names(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    package = tmp_path / "code"
    package.mkdir()
    (package / "evil_parent.py").write_text(textwrap.dedent(EVIL.format(marker=str(marker))))
    monkeypatch.syspath_prepend(str(package))
    net = Supernet.build(["evil_parent:build", "demo:mobilenet_like"], (1, 8, 8))  # you typed it
    folder = net.save(tmp_path / "sn")
    marker.unlink()
    sys.modules.pop("evil_parent", None)
    with pytest.raises(ModelError, match="names code .*--trust-code"):
        Supernet.load(folder)
    done = run_cli("inspect", str(folder), env={"PYTHONPATH": str(package)})
    assert "names code" in one_error_line(done)
    assert not marker.exists()  # neither imported nor called
    Supernet.load(folder, trust_code=True)
    assert marker.read_text() == "called"


@pytest.mark.parametrize(
    "a, b",
    [
        ("timm:tf_mobilenetv3_small_minimal_100", "timm:mobilenetv3_small_050"),  # TF padding
        ("timm:vit_tiny_patch16_224?img_size=32", "timm:deit_tiny_patch16_224?img_size=32"),
    ],
    ids=["tf-padding", "vit"],
)
def test_timm_parents_stitch_and_export(tmp_path, a, b):
    pytest.importorskip("timm")
    torch.manual_seed(0)
    net = Supernet.build([a, b], (3, 32, 32))  # no leaf modules named: timm's fx rules apply
    assert len(net.matches) > 20
    rng = random.Random(0)
    x = torch.randn(3, 3, 32, 32)
    for k in range(2):
        genotype = [rng.randrange(len(net.output_choices))]
        genotype += [int(rng.random() < 0.1) for _ in net.genotype_spec[1:]]
        assert net.plan(genotype).stitched, "the offspring should use a stitch"
        out = tmp_path / f"offspring{k}"
        export_offspring(net, tuple(genotype), out)
        code = (
            f"import sys; sys.path.insert(0, {str(out)!r})\n"
            "import offspring, torch\n"
            "x = torch.load(sys.argv[1], weights_only=True)\n"
            "print(offspring.load()(x).flatten().tolist())"
        )
        torch.save(x, tmp_path / "x.pt")
        done = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "x.pt")], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        with torch.no_grad():
            expected = net(x, genotype).flatten()
        got = torch.tensor(json.loads(done.stdout))
        assert (got - expected).abs().max() <= 1e-5 * max(1.0, float(expected.abs().max()))
