"""What installing evostitch costs a user: size and time of a fresh venv (issue 40).

Builds the wheel of the working tree and of a baseline commit (a temporary git worktree),
then, for each, times into a fresh venv (Python 3.11, pip's cache as it is: warm for
both) the core install (`pip install evostitch-*.whl`) and the README's install command
(`pip install -e ".[dev]"` in that tree), and measures each venv on disk. Prints both
with the ratio after / before, and the distributions one has and the other lacks.

    python benchmarks/install_footprint.py --baseline 048417d [--only core]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from importlib.metadata import distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*cmd: str | Path, cwd: Path | None = None) -> None:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{done.stderr[-2000:]}")


def wheel(tree: Path, out: Path) -> Path:
    run(sys.executable, "-m", "build", "--wheel", "--outdir", out, tree)
    return next(out.glob("evostitch-*.whl"))


def size_mb(path: Path) -> float:
    files = (p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return sum(p.stat().st_size for p in files) / 1e6


def installed(venv: Path) -> set[str]:
    site = next(venv.glob("lib/python3*/site-packages"))
    return {d.metadata["Name"].lower() for d in distributions(path=[str(site)])}


def measure(target: str, where: Path) -> tuple[float, float, set[str]]:
    """Seconds to `pip install target` into a fresh venv, its size in MB, its packages."""
    venv = where / "venv"
    run("python3.11", "-m", "venv", venv)
    run(venv / "bin/python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    start = time.perf_counter()
    run(venv / "bin/python", "-m", "pip", "install", "--quiet", *target.split(), cwd=where)
    seconds = time.perf_counter() - start
    return seconds, size_mb(venv), installed(venv)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="commit to compare with")
    parser.add_argument("--only", choices=["core", "readme"], help="one of the two installs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        before = tmp / "before-tree"
        run("git", "-C", ROOT, "worktree", "add", "--detach", before, args.baseline)
        try:
            trees = {"before": before, "after": ROOT}
            wheels = {k: wheel(t, tmp / f"{k}-dist") for k, t in trees.items()}
            kinds = {
                "core": lambda k: str(wheels[k]),
                "readme": lambda k: f"-e {trees[k]}[dev]",
            }
            for kind, target in kinds.items():
                if args.only and kind != args.only:
                    continue
                got = {}
                for k in ("before", "after"):
                    where = tmp / f"{kind}-{k}"
                    where.mkdir()
                    got[k] = measure(target(k), where)
                    print(f"{kind:7s} {k:6s} {got[k][0]:7.1f} s {got[k][1]:8.0f} MB", flush=True)
                (t0, s0, p0), (t1, s1, p1) = got["before"], got["after"]
                print(f"{kind:7s} after/before: time {t1 / t0:.2f}x, size {s1 / s0:.2f}x")
                print(f"{kind:7s} only before: {', '.join(sorted(p0 - p1)) or '-'}")
                print(f"{kind:7s} only after: {', '.join(sorted(p1 - p0)) or '-'}")
        finally:
            run("git", "-C", ROOT, "worktree", "remove", "--force", before)


if __name__ == "__main__":
    main()
