"""The command line: output of `match`/`inspect`, and one-line errors with exit code 2."""

import json

import pytest
import torch

from conftest import run_cli as run


def test_match_json(capsys):
    code, out, _ = run(
        [
            "match",
            "--a",
            "torchvision:resnet18",
            "--b",
            "torchvision:mobilenet_v3_small",
            "--input-shape",
            "3,64,64",
            "--json",
        ],
        capsys,
    )
    assert code == 0
    report = json.loads(out)
    assert report["candidates"]["a"] > 50 and report["candidates"]["b"] > 100
    assert report["optimal"] is True
    pairs = [(m["a"], m["b"]) for m in report["matches"]]
    assert ("x", "x") in pairs and len(pairs) == len(set(pairs)) > 10
    assert report["seconds"]["matching"] >= 0


def test_match_without_data_says_random(capsys):
    code, out, err = run(
        [
            "match",
            "--a",
            "torchvision:resnet18",
            "--b",
            "torchvision:resnet18",
            "--input-shape",
            "3,32,32",
            "--similarity",
            "cka",
        ],
        capsys,
    )
    assert code == 0 and "random inputs" in err
    assert "matches" in out


@pytest.mark.parametrize(
    "argv,needle",
    [
        (
            ["--a", "torchvision:nope", "--b", "torchvision:resnet18", "--input-shape", "3,32,32"],
            "unknown torchvision model",
        ),
        (
            [
                "--a",
                "torchvision:resnet18",
                "--b",
                "torchvision:resnet18",
                "--input-shape",
                "5,32,32",
            ],
            "rejects input of shape",
        ),
        (
            ["--a", "torchvision:resnet18", "--b", "torchvision:resnet18", "--input-shape", "3,x"],
            "bad --input-shape",
        ),
        (
            [
                "--a",
                "tests.untraceable:build",
                "--b",
                "torchvision:resnet18",
                "--input-shape",
                "3,32,32",
            ],
            "cannot trace module",
        ),
    ],
)
def test_match_bad_input_is_one_line_exit_2(argv, needle, capsys):
    code, out, err = run(["match", *argv], capsys)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err + out


def test_inspect_json(tmp_path, capsys):
    code, _, _ = run(
        [
            "stitch",
            "--a",
            "demo:resnet_like",
            "--b",
            "demo:mobilenet_like",
            "--input-shape",
            "1,8,8",
            "--out",
            str(tmp_path / "sn"),
        ],
        capsys,
    )
    assert code == 0
    code, out, _ = run(["inspect", str(tmp_path / "sn"), "--json", "--samples", "3"], capsys)
    assert code == 0
    report = json.loads(out)
    assert [p["side"] for p in report["parents"]] == ["a", "b"]
    assert all(p["macs"] > 0 for p in report["parents"])
    assert report["variables"] == 1 + 2 * len(report["matches"])
    assert len(report["offspring_sample"]) == 3
    # a second stitch into the finished folder is refused, the folder is left intact
    code, _, err = run(
        [
            "stitch",
            "--a",
            "demo:resnet_like",
            "--b",
            "demo:mobilenet_like",
            "--input-shape",
            "1,8,8",
            "--out",
            str(tmp_path / "sn"),
        ],
        capsys,
    )
    assert code == 2 and "already holds" in err


def test_a_fit_memory_budget_changes_the_passes_not_the_stitches(tmp_path, capsys, monkeypatch):
    from evostitch.supernet import Supernet
    from evostitch.training import fit

    passes = []
    real = fit.fit_passes
    monkeypatch.setattr(fit, "fit_passes", lambda *a: passes.append(real(*a)) or passes[-1])
    base = ["stitch", "--a", "demo:resnet_like", "--b", "demo:mobilenet_like"]
    base += ["--input-shape", "1,8,8", "--data", "digits", "--fit-samples", "128"]
    base += ["--hold-samples", "0", "--downstream-steps", "0"]  # the fit's result alone
    for name, extra in (("one", []), ("split", ["--fit-memory", "1"])):
        code, _, err = run([*base, *extra, "--out", str(tmp_path / name)], capsys)
        assert code == 0, err
    from evostitch import api

    api.stitch(
        ["demo:resnet_like", "demo:mobilenet_like"], (1, 8, 8), data="digits", fit_samples=128,
        hold_samples=0, downstream=0, fit_memory=1, out=tmp_path / "api", progress=False,
    )  # fmt: skip
    assert len(passes[0]) == 1 and len(passes[1]) > 1  # 1 MiB: several passes
    assert passes[2] == passes[1]  # the API's fit_memory is MiB too
    one, split, by_api = (
        Supernet.load(tmp_path / n).stitches.state_dict() for n in ("one", "split", "api")
    )
    assert one.keys() == split.keys() == by_api.keys()
    assert all(torch.equal(one[k], split[k]) and torch.equal(one[k], by_api[k]) for k in one)


def test_the_run_own_settings_are_search_options_the_cli_refuses_on_resume():
    """`api.RUN_OWN` (search's options that resume does not take) are named as the CLI's
    search options, so that `--resume` with any of them is refused, not ignored."""
    import typer

    from evostitch import api
    from evostitch.cli.app import app

    search = typer.main.get_command(app).commands["search"]
    options = {p.name for p in search.params}
    assert api.RUN_OWN and set(api.RUN_OWN) <= options
    assert not {"budget", "backend", "batch", "device"} & set(api.RUN_OWN)
