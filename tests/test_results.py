"""Re-evaluation on test data, fine-tuning and export of a tiny real run's offspring."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import embedded_data, invoke, tiny_run
from evostitch.errors import EvostitchError
from evostitch.evaluation.metrics import TEMPERATURES
from evostitch.evolution.archive import nondominated
from evostitch.results.export import offspring_module
from evostitch.results.finetune import finetune
from evostitch.results.reevaluate import load_reevaluation
from evostitch.results.solutions import find_solution, load_supernet, read_run, run_solutions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory, "results")


@pytest.fixture(scope="module")
def net(run):
    config, _ = read_run(run)
    return load_supernet(config)


def stitched_front_member(run: Path, net) -> str:
    """The id of a front member that uses at least one stitch (else any offspring that does)."""
    _, records = read_run(run)
    for r in nondominated(records) + records:
        if net.plan(r.canonical).stitched:
            return str(r.id)
    raise AssertionError("no stitched offspring in the run")


def test_reevaluate_scores_front_and_references_and_report_shows_the_gap(run, net):
    invoke("reevaluate", run, "--split", "test")
    data = json.loads((run / "reevaluation_test.json").read_text())
    _, records = read_run(run)
    expected = [s.label for s in run_solutions(net, records)]
    assert [s["label"] for s in data["solutions"]] == expected
    assert {"parent-a", "parent-b", "ensemble", "ensemble-prob"} <= set(expected)
    by_id = {r.id: r for r in records}
    for s in data["solutions"]:
        val, test = s["val"], s["test"]
        assert val["accuracy"] == pytest.approx(-by_id[s["id"]].objectives[0], abs=1e-12)
        assert 0 <= test["ece"] <= 1 and 0 <= val["ece"] <= 1
        assert test["n"] > 0 and test["macs"] == val["macs"]
    invoke("report", run)
    html = embedded_data((run / "report.html").read_text())
    shown = [p for p in html["points"] if p["f"] or p["ref"]]
    assert html["test_split"] == "test" and all("t" in p and "ece" in p["t"] for p in shown)
    header = (run / "front.csv").read_text().splitlines()[0]
    columns = "id,solution,metric,macs,test_accuracy,test_minus_val,val_ece,test_ece,genotype"
    assert header == columns


def test_reevaluate_calibrate_records_temperature_and_ece_before_and_after(run):
    output = invoke("reevaluate", run, "--split", "test", "--calibrate").output
    assert "ECE (test)" in output and "before -> after" in output
    data = json.loads((run / "reevaluation_test.json").read_text())
    assert data["calibrated"] is True and data["version"] == 1
    for s in data["solutions"]:
        assert s["temperature"] in TEMPERATURES
        val, test = s["val"], s["test"]
        assert "by_temperature" not in val and "by_temperature" not in test
        # T is the grid's least NLL on val, and T = 1 is on the grid
        assert val["cross_entropy_calibrated"] <= val["cross_entropy"]
        for scores in (val, test):
            assert 0 <= scores["ece_calibrated"] <= 1 and scores["cross_entropy_calibrated"] > 0
    first = data["solutions"][0]
    assert f"{first['test']['ece']:.4f} -> {first['test']['ece_calibrated']:.4f}" in output
    invoke("report", run)
    rows = list(csv.DictReader((run / "front.csv").read_text().splitlines()))
    by_id = {str(s["id"]): s for s in data["solutions"]}
    for row in rows:
        s = by_id[row["id"]]
        assert float(row["test_ece_calibrated"]) == s["test"]["ece_calibrated"]
        assert float(row["temperature"]) == s["temperature"]


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda s: s["val"].pop("ece"), "solution 0 has no finite ece on val"),
        (lambda s: s.pop("temperature"), "solution 0 has no finite temperature"),
    ],
)
def test_a_reevaluation_missing_what_the_report_reads_is_damaged(run, tmp_path, damage, says):
    # what the report reads is checked when the file is read: one line, not a KeyError
    invoke("reevaluate", run, "--split", "test", "--calibrate")
    data = json.loads((run / "reevaluation_test.json").read_text())
    damage(data["solutions"][0])
    (tmp_path / "reevaluation_test.json").write_text(json.dumps(data))
    with pytest.raises(EvostitchError, match=f"is damaged: {says}"):
        load_reevaluation(tmp_path)


def test_reevaluate_refuses_the_search_split(run):
    with pytest.raises(EvostitchError, match="searched on 'val'"):
        invoke("reevaluate", run, "--split", "val")


def test_unknown_solutions_are_user_errors(run, net):
    _, records = read_run(run)
    for key in ("999", "parent-c"):
        with pytest.raises(EvostitchError):
            find_solution(net, records, key)


def test_finetune_stitches_only_changes_only_stitches(run, net):
    ident = stitched_front_member(run, net)
    _, records = read_run(run)
    genotype = find_solution(net, records, ident).genotype
    from evostitch.data import load_dataset

    before = {k: v.clone() for k, v in net.extract(genotype).state_dict().items()}
    done = finetune(
        net,
        genotype,
        load_dataset("digits", "train"),
        max_batches=3,
        lr=1e-2,
        stitches_only=True,
        device="cpu",
        progress=False,
    )
    after = done.model.state_dict()
    assert len(done.losses) == 3 and before.keys() == after.keys() and done.kept is None
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("stitches.") for k in changed)
    assert all(torch.equal(v, net.extract(genotype).state_dict()[k]) for k, v in before.items())


def finetune_scored(net, genotype, scores: list[float], **options):
    """Fine-tune with a validation 'score' read from `scores` in turn; also returns the
    state after each scored batch (0: the start)."""
    from evostitch.data import load_dataset

    states, it = {}, iter(scores)

    def validate(model):
        states[len(states)] = {k: v.clone() for k, v in model.state_dict().items()}
        return next(it)

    done = finetune(
        net, genotype, load_dataset("digits", "train"), lr=1e-2, device="cpu",
        progress=False, validate=validate, **options,
    )  # fmt: skip
    return done, list(states.values())


def test_finetune_that_only_hurts_returns_the_starting_network(run, net):
    genotype = find_solution(net, read_run(run)[1], stitched_front_member(run, net)).genotype
    done, states = finetune_scored(net, genotype, [0.9, 0.5, 0.4, 0.3], max_batches=3)
    assert done.kept == 0 and list(done.scores) == [0, 1, 2, 3]
    kept = done.model.state_dict()
    assert any(not torch.equal(states[0][k], states[-1][k]) for k in kept)  # it did train
    assert all(torch.equal(v, states[0][k]) for k, v in kept.items())
    assert all(torch.equal(v, net.extract(genotype).state_dict()[k]) for k, v in kept.items())


def test_finetune_keeps_the_best_scored_state(run, net):
    genotype = find_solution(net, read_run(run)[1], stitched_front_member(run, net)).genotype
    # 6 batches, 3 checks: scored at the start and after batches 2, 4 and 6
    done, states = finetune_scored(net, genotype, [0.5, 0.6, 0.8, 0.7], max_batches=6, checks=3)
    assert list(done.scores) == [0, 2, 4, 6] and done.kept == 4
    assert all(torch.equal(v, states[2][k]) for k, v in done.model.state_dict().items())


def test_finetune_command_saves_weights_and_before_after_metrics(run, net):
    ident = stitched_front_member(run, net)
    invoke("finetune", run, "--solution", ident, "--epochs", "0.05", "--lr", "1e-3")
    folder = run / "finetuned" / ident
    summary = json.loads((folder / "finetune.json").read_text())
    assert summary["batches"] == 8  # ceil(0.05 * 1257 / 8)
    for when in ("before", "after"):
        assert set(summary[when]) == {"val", "test"}
        assert 0 <= summary[when]["test"]["accuracy"] <= 1
    _, records = read_run(run)
    stored = next(r for r in records if str(r.id) == ident)
    assert summary["before"]["val"]["accuracy"] == pytest.approx(-stored.objectives[0])
    val = summary["validation"]
    assert val["split"] == "val" and set(val["scores"]) == {"0", "2", "4", "6", "8"}
    assert val["scores"]["0"] == pytest.approx(summary["before"]["val"]["accuracy"])
    kept = val["scores"][str(val["kept_batch"])]
    assert kept == max(val["scores"].values()) == pytest.approx(summary["after"]["val"]["accuracy"])
    weights = load_file(str(folder / "weights.safetensors"))
    assert weights.keys() == net.extract(stored.canonical).state_dict().keys()


RELOAD = """
import sys
sys.modules["evostitch"] = None  # importing evostitch now fails
sys.path.insert(0, {folder!r})
import offspring
from safetensors.torch import load_file

case = load_file({case!r})
model = offspring.load()
print(float((model(case["input"]) - case["output"]).abs().max()))
assert not [m for m, v in sys.modules.items() if m.startswith("evostitch") and v is not None]
"""


def reload_gap(folder: Path, x: torch.Tensor, expected: torch.Tensor, tmp: Path) -> float:
    """Load the export in a fresh, isolated interpreter without evostitch; max |difference|."""
    case = tmp / "case.safetensors"
    save_file({"input": x, "output": expected.contiguous()}, str(case))
    code = textwrap.dedent(RELOAD.format(folder=str(folder), case=str(case)))
    done = subprocess.run(
        [sys.executable, "-I", "-c", code], cwd=tmp, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return float(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("which", ["stitched", "parent-b", "ensemble-prob"])
def test_exported_offspring_reloads_without_evostitch(run, net, tmp_path, which):
    ident = stitched_front_member(run, net) if which == "stitched" else which
    out = tmp_path / "export"
    invoke("export", run, "--solution", ident, "--out", out)
    meta = json.loads((out / "offspring.json").read_text())
    assert meta["solution"] == ident and not meta["finetuned"]
    assert "import evostitch" not in (out / "offspring.py").read_text()
    genotype = tuple(int(c) for c in meta["genotype"])
    x = torch.randn(5, *net.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = net(x, genotype)
    assert reload_gap(out, x, expected, tmp_path) <= 1e-6


def test_export_of_finetuned_weights(run, net, tmp_path):
    ident = stitched_front_member(run, net)
    if not (run / "finetuned" / ident).is_dir():
        invoke("finetune", run, "--solution", ident, "--max-batches", "2", "--lr", "1e-2")
    # fine-tuning may keep the starting weights (the best on val): make the saved ones
    # differ, so that the export can only match them by reading them
    saved = run / "finetuned" / ident / "weights.safetensors"
    weights = {
        k: v + 0.05 if k.startswith("stitches.") and v.is_floating_point() else v
        for k, v in load_file(str(saved)).items()
    }
    save_file(weights, str(saved))
    out = tmp_path / "export"
    invoke("export", run, "--solution", ident, "--out", out, "--finetuned")
    meta = json.loads((out / "offspring.json").read_text())
    genotype = tuple(int(c) for c in meta["genotype"])
    model = offspring_module(net, genotype, weights)
    x = torch.randn(3, *net.input_shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, original = model(x), net(x, genotype)
    assert not torch.allclose(expected, original)  # the fine-tuned weights are the ones exported
    assert reload_gap(out, x, expected, tmp_path) <= 1e-6


def test_export_refuses_a_used_folder_and_explains_missing_onnx(run, tmp_path):
    out = tmp_path / "export"
    if importlib.util.find_spec("onnx") and importlib.util.find_spec("onnxscript"):
        invoke("export", run, "--solution", "parent-a", "--out", out, "--onnx")
        assert (out / "offspring.onnx").stat().st_size > 0
    else:
        with pytest.raises(EvostitchError, match="--onnx needs the onnx"):
            invoke("export", run, "--solution", "parent-a", "--out", out, "--onnx")
        assert not out.exists()  # refused before any work
    out.mkdir(exist_ok=True)
    (out / "offspring.py").touch()
    with pytest.raises(EvostitchError, match="already holds"):
        invoke("export", run, "--solution", "parent-a", "--out", out)
