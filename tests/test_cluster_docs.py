"""docs/CLUSTER.md's SLURM script and KubeRay manifest, checked as far as this machine
allows (no SLURM, no Kubernetes): shell syntax, every `evostitch` command against the
CLI's options, and the workers asked for against the resources given."""

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.main import get_command

from evostitch.cli.app import app

DOC = Path(__file__).parents[1] / "docs" / "CLUSTER.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def parse_search(argv: list[str]) -> dict:
    """`evostitch search ARGV` parsed by the CLI itself (unknown options, bad values and
    wrong types raise), without running it."""
    assert argv[:2] == ["evostitch", "search"], argv
    command = get_command(app).commands["search"]
    return command.make_context("search", argv[2:]).params


def slurm_script() -> str:
    (script,) = [b for b in blocks("bash") if "#SBATCH" in b]
    return script


def test_the_slurm_script_is_valid_bash_and_its_searches_parse():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    script = slurm_script()
    subprocess.run([bash, "-n"], input=script, text=True, check=True)
    sbatch = dict(re.findall(r"#SBATCH --([\w-]+)=(\S+)", script))
    nodes, gpus, cpus = (int(sbatch[k]) for k in ("nodes", "gpus-per-node", "cpus-per-task"))
    values = {"ALG": "gomea", "SEED": "3", "RUN": "runs/gomea-seed3", "HEAD": "node1",
              "PORT": "6382"}  # fmt: skip
    how = re.search(r"HOW=\((.*?)\)", script, flags=re.S).group(1)
    commands = [c for c in _commands(script) if c.startswith("evostitch ")]
    assert len(commands) == 2  # a new run, and a requeued one resumed
    for command in commands:
        text = command.replace('"${HOW[@]}"', how)
        text = re.sub(r'"?\$(\w+)"?', lambda m: values[m.group(1)], text)
        params = parse_search(shlex.split(text))
        assert params["backend"] == "ray" and params["address"] == "node1:6382"
        assert params["workers"] * params["gpus_per_worker"] <= nodes * gpus
        assert params["workers"] * params["cpus_per_worker"] <= nodes * cpus
        if params["resume"] is None:
            assert params["population"] >= params["workers"] * params["batch"]
            assert (params["algorithm"], params["seed"]) == ("gomea", 3)


def _commands(script: str) -> list[str]:
    """The script's commands, continuation lines joined, comments and indents gone."""
    joined = re.sub(r"\\\n\s*", " ", script)
    return [line.split(" #")[0].strip() for line in joined.splitlines() if line.strip()]


def test_the_kuberay_job_asks_for_what_its_pods_give():
    yaml = pytest.importorskip("yaml")
    (manifest,) = blocks("yaml")
    job = yaml.safe_load(manifest)
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    params = parse_search(shlex.split(job["spec"]["entrypoint"]))
    assert params["backend"] == "ray" and params["address"] == "auto"
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (group,) = cluster["workerGroupSpecs"]
    (container,) = group["template"]["spec"]["containers"]
    limits = container["resources"]["limits"]
    pods = group["replicas"]
    assert group["minReplicas"] == pods == group["maxReplicas"]
    assert params["workers"] * params["gpus_per_worker"] <= pods * int(limits["nvidia.com/gpu"])
    assert params["workers"] * params["cpus_per_worker"] <= pods * int(limits["cpu"])
    assert params["population"] >= params["workers"] * params["batch"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    mounted = {m["mountPath"] for c in head["containers"] for m in c["volumeMounts"]}
    assert params["supernet"].parent.as_posix() in mounted  # the driver reads its folder
    assert str(params["out"]).startswith("/data/")  # and keeps its run on the volume
