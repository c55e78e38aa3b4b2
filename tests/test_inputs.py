"""What a user's inputs must satisfy before any work (issue 41, defects 2, 4, 6, 7), built
the way the outside probe built them: a truncated PNG in an image folder, a leftover
stitch-training checkpoint of another command, an output location that is a file or
read-only, a one-class folder and negative numbers."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evostitch import api, files
from evostitch.data import load_dataset, skipped
from evostitch.errors import EvostitchError
from evostitch.evaluation import Evaluator
from evostitch.supernet import Supernet

pytestmark = pytest.mark.usefixtures("one_thread")
A3 = "demo:resnet_like?in_channels=3&num_classes=3"
B3 = "demo:mobilenet_like?in_channels=3&num_classes=3"
A1, B1 = "demo:resnet_like", "demo:mobilenet_like"  # 1x8x8 digits, 10 classes


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The real entry point (main(): an EvostitchError is one line and exit 2)."""
    return subprocess.run(
        [sys.executable, "-m", "evostitch.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
    )


def one_line(done: subprocess.CompletedProcess, says: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr


def truncate(path: Path) -> None:
    """Cut a valid PNG in half, as a copy that died on the way would leave it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def image_folder(root: Path, classes=("red", "green", "blue"), n=8) -> Path:
    """root/{train,val,test}/CLASS/i.png: small noisy RGB images, one colour per class."""
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(n if split != "train" else 3 * n):
                pixels = rng.integers(0, 120, (10, 10, 3))
                pixels[..., c % 3] += 120
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i}.png")
    return root


# ---- defect 2: a bad image in a folder --------------------------------------------------


def test_a_truncated_png_is_left_out_of_its_split_the_same_way_every_time(tmp_path):
    root = image_folder(tmp_path / "photos")
    spec = f"imagefolder:{root}?size=8"
    first = load_dataset(spec, "val")
    before = {s: list(load_dataset(spec, s).indices) for s in ("train", "val")}
    bad = Path(first.dataset.samples[before["val"][0]][0])  # an image of the val split
    truncate(bad)
    val = load_dataset(spec, "val")
    assert skipped(val) == [str(bad)]
    assert len(val) == len(before["val"]) - 1
    assert list(val.indices) == [i for i in before["val"] if val.dataset.samples[i][0] != str(bad)]
    assert list(load_dataset(spec, "val").indices) == list(val.indices)  # every load alike
    assert skipped(load_dataset(spec, "train")) == []
    net = Supernet.build([A3, B3], (3, 8, 8))
    ev = Evaluator(net, val, 3, batch_size=16, device="cpu", workers=0)
    results = [ev.metrics(g)["accuracy"] for g in net.reference_genotypes]  # no failure
    assert all(0 <= r <= 1 for r in results)


def test_stitch_and_search_on_a_folder_with_a_truncated_png_skip_it_and_say_so(tmp_path):
    root = image_folder(tmp_path / "photos")
    val = load_dataset(f"imagefolder:{root}?size=8", "val")
    bad = {"train": root / "train/green/1.png", "val": Path(val.dataset.samples[val.indices[2]][0])}
    for path in bad.values():
        truncate(path)
    done = cli(tmp_path, "stitch", "--a", A3, "--b", B3, "--input-shape", "3,8,8",
               "--data", "imagefolder:photos", "--out", "sn", "--fit-samples", "32",
               "--steps", "0", "--downstream-steps", "0", "--hold-samples", "0")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    for split, path in bad.items():
        assert f"skipped 1 unreadable image of the {split} split: {path}" in done.stderr
    done = cli(tmp_path, "search", "sn", "--out", "run", "--budget", "6", "--population", "2",
               "--algorithm", "rs", "--fidelity", "full")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"skipped 1 unreadable image of the val split: {bad['val']}" in done.stderr
    assert ", 0 failed;" in " ".join(done.stdout.split()), done.stdout


# ---- defect 4: a leftover stitch-training checkpoint ------------------------------------


@pytest.fixture(scope="module")
def leftover_once(tmp_path_factory) -> Path:
    """A stitch run whose training finished but whose supernetwork was never saved (the
    process died): its folder holds checkpoints/ alone. Made once per module."""
    out = tmp_path_factory.mktemp("leftover") / "sn"
    api.stitch([A1, B1], (1, 8, 8), data="digits", out=out, **QUICK, seed=0)
    for path in out.iterdir():
        if path.name != "checkpoints":
            path.unlink()
    return out


@pytest.fixture
def leftover(leftover_once, tmp_path) -> Path:
    """A copy of `leftover_once` of the test's own."""
    return shutil.copytree(leftover_once, tmp_path / "sn")


QUICK = {"fit_samples": 64, "steps": 3, "downstream": 2, "batch_size": 16, "hold_samples": 0}
QUICK["progress"] = False


@pytest.mark.parametrize(
    "change, says",
    [
        ({"seed": 1}, "was made with --seed 0, not 1: rerun with --seed 0 to resume, or remove"),
        ({"a": B1, "b": A1}, f"was made with parents {A1}, {B1}, not {B1}, {A1}: rerun with"),
        ({"steps": 5}, "was made with --steps 3, not 5"),
        ({"batch_size": 8}, "was made with --batch-size 16, not 8"),
        ({"downstream": 4}, "was made with --downstream-steps 2, not 4"),
        ({"data": "digits?size=8"}, "was made with --data digits, not digits?size=8"),
    ],
)
def test_a_leftover_checkpoint_of_another_command_is_refused_in_one_line(
    leftover, change, says, monkeypatch
):
    fit = []
    monkeypatch.setattr("evostitch.training.loop.least_squares_init", lambda *a, **k: fit.append(1))
    args = {"a": A1, "b": B1, **QUICK, "seed": 0, "data": "digits", **change}
    with pytest.raises(EvostitchError) as err:
        api.stitch([args.pop("a"), args.pop("b")], (1, 8, 8), out=leftover, **args)
    message = str(err.value)
    assert says in message and "\n" not in message, message
    assert fit == []  # refused before any training
    assert not (leftover / "supernet.json").exists()


def test_a_leftover_checkpoint_with_other_parent_weights_is_refused(leftover, tmp_path):
    weights = tmp_path / "a.safetensors"
    from safetensors.torch import save_file

    from evostitch.models import load_model

    model = load_model(A1)
    state = {k: v + 0.5 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    with pytest.raises(EvostitchError, match="made with other weights of parent A: rerun"):
        api.stitch(
            [A1, B1], (1, 8, 8), data="digits", out=leftover, weights=[weights, None], **QUICK
        )


def test_the_same_command_resumes_and_says_so(leftover, capsys):
    options = {**QUICK, "progress": True}
    net = api.stitch([A1, B1], (1, 8, 8), data="digits", out=leftover, seed=0, **options)
    err = capsys.readouterr().err
    assert f"resuming stitch training from {leftover / 'checkpoints'} (step 5 of 5)" in (
        " ".join(err.split())
    )
    fresh = api.stitch([A1, B1], (1, 8, 8), data="digits", seed=0, **QUICK)  # no checkpoint
    for key, value in fresh.stitches.state_dict().items():
        assert value.equal(net.stitches.state_dict()[key]), key


def test_parents_swapped_on_the_command_line_is_one_line(leftover):
    done = cli(leftover.parent, "stitch", "--a", B1, "--b", A1, "--input-shape", "1,8,8",
               "--data", "digits", "--out", leftover, "--fit-samples", "64", "--steps", "3",
               "--downstream-steps", "2", "--batch-size", "16", "--hold-samples", "0")  # fmt: skip
    one_line(done, f"was made with parents {A1}, {B1}, not {B1}, {A1}")


# ---- defect 6: output locations checked before the work ---------------------------------


def read_only(monkeypatch, folder: Path) -> None:
    """Make `folder` read-only for evostitch.files, as a read-only mount would (tests run
    as root, whom chmod does not stop): creating a file in it fails with EROFS."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(files, "tempfile", types.SimpleNamespace(mkstemp=mkstemp))


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if matching or a search's problem is built (the work)."""

    def work(*args, **kwargs):
        raise AssertionError("work started before the output location was checked")

    monkeypatch.setattr(Supernet, "build", work)
    monkeypatch.setattr(api, "problem_from_spec", work)


@pytest.mark.parametrize("where", ["file", "read-only", "inside read-only"])
def test_stitch_and_search_check_out_before_any_work(tmp_path, monkeypatch, where, no_work):
    target = tmp_path / "place"
    if where == "file":
        target.write_text("a file of the user's")
    else:
        target.mkdir()
        read_only(monkeypatch, target)
    out = target if where != "inside read-only" else target / "new"
    says = "exists and is not a folder" if where == "file" else "cannot write in"
    with pytest.raises(EvostitchError, match=says) as err:
        api.stitch([A1, B1], (1, 8, 8), data="digits", out=out, progress=False)
    assert "\n" not in str(err.value)
    with pytest.raises(EvostitchError, match=says):
        api.search(tmp_path / "no-need-to-exist", out=out, data="digits", progress=False)
    if where == "file":
        assert target.read_text() == "a file of the user's"


def test_stitch_out_an_existing_file_is_one_line_on_the_command_line(tmp_path):
    (tmp_path / "taken").write_text("mine")
    done = cli(tmp_path, "stitch", "--a", A1, "--b", B1, "--input-shape", "1,8,8",
               "--data", "digits", "--out", "taken")  # fmt: skip
    one_line(done, "taken exists and is not a folder")
    assert (tmp_path / "taken").read_text() == "mine"


# ---- defect 7: search --data checked like stitch's; numbers in range --------------------


@pytest.fixture
def rgb_supernet(tmp_path) -> Path:
    """A saved supernetwork of 10-class parents on 3x8x8 inputs."""
    net = Supernet.build(
        ["demo:resnet_like?in_channels=3", "demo:mobilenet_like?in_channels=3"], (3, 8, 8)
    )
    return net.save(tmp_path / "sn")


def test_search_data_of_one_class_on_a_ten_class_supernetwork_is_refused(
    tmp_path, rgb_supernet, monkeypatch
):
    one = image_folder(tmp_path / "one", classes=("only",), n=4)
    evaluated = []
    monkeypatch.setattr(api, "run_search", lambda *a, **k: evaluated.append(1))
    with pytest.raises(EvostitchError, match="has 1 classes, the parents output 10") as err:
        api.search(rgb_supernet, out=tmp_path / "run", data=f"imagefolder:{one}?size=8")
    assert "\n" not in str(err.value) and evaluated == []
    done = cli(tmp_path, "search", rgb_supernet, "--out", "run", "--data",
               f"imagefolder:{one}?size=8")  # fmt: skip
    one_line(done, "has 1 classes, the parents output 10")
    assert not (tmp_path / "run").exists()


def test_a_negative_seed_is_one_line_in_the_cli_and_the_api(tmp_path, rgb_supernet):
    with pytest.raises(EvostitchError, match="need a seed from 0 to"):
        api.search(rgb_supernet, out=tmp_path / "run", data="digits", seed=-1)
    with pytest.raises(EvostitchError, match="need a seed from 0 to"):
        api.stitch([A1, B1], (1, 8, 8), seed=-1, progress=False)
    done = cli(tmp_path, "search", rgb_supernet, "--out", "run", "--data", "digits", "--seed", "-1")
    one_line(done, "need a seed from 0 to 4294967295 (--seed), got -1")
    done = cli(tmp_path, "stitch", "--a", A1, "--b", B1, "--input-shape", "1,8,8",
               "--out", "sn2", "--seed", "-1")  # fmt: skip
    one_line(done, "got -1")
    assert not (tmp_path / "run").exists() and not (tmp_path / "sn2").exists()


@pytest.mark.parametrize(
    "options, says",
    [
        ({"batch_size": 0}, "batch_size (--batch-size) >= 1"),
        ({"epochs": float("nan")}, "epochs (--epochs) >= 0"),
        ({"epochs": -1.0}, "epochs (--epochs) >= 0"),
        ({"max_ratio": 0}, "max_ratio (--max-ratio) >= 1"),
        ({"fit_samples": -5}, "fit_samples (--fit-samples) >= 0"),
        ({"steps": 2, "epochs": 1.0}, "not both"),
        ({"hold_samples": -1}, "hold_samples (--hold-samples) >= 0"),
        ({"fit_memory": 0}, "fit_memory (--fit-memory) >= 1"),  # 0 is a value, not unset
    ],
)
def test_stitch_numbers_out_of_range_are_refused_before_any_work(options, says, no_work):
    with pytest.raises(EvostitchError, match=says.replace("(", r"\(").replace(")", r"\)")):
        api.stitch([A1, B1], (1, 8, 8), data="digits", progress=False, **options)


@pytest.mark.parametrize(
    "options, says",
    [
        ({"batch": 0}, "batch (--batch) >= 1"),
        ({"workers": 0}, "workers (--workers) >= 1"),
        ({"cpus_per_worker": 0.0}, "cpus_per_worker (--cpus-per-worker) > 0"),
        ({"p_stitch": float("nan")}, "0 <= p_stitch (--p-stitch) <= 1"),
        ({"population": 1}, "population (--population) >= 2"),
    ],
)
def test_search_numbers_out_of_range_are_refused_before_any_work(tmp_path, options, says, no_work):
    with pytest.raises(EvostitchError) as err:
        api.search(tmp_path / "sn", out=tmp_path / "run", data="digits", **options)
    assert says in str(err.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "options, says",
    [
        ({"batch": 0}, "batch (--batch) >= 1"),
        ({"workers": 0}, "workers (--workers) >= 1"),
    ],
)
def test_resume_numbers_out_of_range_are_refused_before_opening_the_run(tmp_path, options, says):
    with pytest.raises(EvostitchError, match=says.replace("(", r"\(").replace(")", r"\)")):
        api.resume(tmp_path / "no-such-run", progress=False, **options)


def test_the_cli_and_the_api_refuse_the_same_numbers_in_the_same_words(tmp_path, capsys):
    from conftest import run_cli

    stitch = ["stitch", "--a", A1, "--b", B1, "--input-shape", "1,8,8", "--data", "digits"]
    for argv, says in [
        (
            [*stitch, "--out", tmp_path / "sn", "--hold-samples", "-1"],
            "hold_samples (--hold-samples)",
        ),
        ([*stitch, "--out", tmp_path / "sn", "--fit-memory", "0"], "fit_memory (--fit-memory)"),
        (["search", "--resume", tmp_path / "run", "--batch", "0"], "batch (--batch) >= 1"),
    ]:
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and says in " ".join(err.split()), (argv, err)


def test_the_checkpoint_records_what_it_belongs_to(leftover):
    """The identity is plain JSON in the checkpoint's metadata (readable by a person)."""
    from safetensors import safe_open

    path = leftover / "checkpoints" / "train_state.safetensors"
    with safe_open(str(path), framework="pt") as f:
        made = json.loads(f.metadata()["evostitch"])["identity"]
    assert made["parents"] == [A1, B1] and made["seed"] == 0 and made["data"] == "digits"
    assert len(made["weights"]) == 2 and made["input_shape"] == [1, 8, 8]
