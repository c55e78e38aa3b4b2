"""CI: the built wheel and sdist carry what the editable checkout has.

Checks the wheel's metadata (name, version = evostitch.__version__, Python without an
upper cap, every dependency a range and none pinned with ==, the extras demo, ray, timm
and dev), its entry point, and that the files a run needs at run time (the report
template, every module of src/) are inside both archives. Usage:
`python .ci/check_dist.py dist/evostitch-*.whl dist/evostitch-*.tar.gz`.
"""

from __future__ import annotations

import re
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
EXTRAS = {"demo", "ray", "timm", "dev"}


def fail(message: str) -> None:
    sys.exit(f"check_dist: {message}")


def source_files() -> set[str]:
    """Paths under src/ a run needs: every module and the report template."""
    found = {p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py")}
    found |= {p.relative_to(SRC).as_posix() for p in (SRC / "evostitch" / "assets").glob("*.html")}
    return found


def check_wheel(path: Path) -> None:
    with zipfile.ZipFile(path) as wheel:
        names = set(wheel.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(wheel.read(info).decode())
        points = wheel.read(info.replace("METADATA", "entry_points.txt")).decode()
    missing = sorted(source_files() - names)
    if missing:
        fail(f"{path.name} lacks {missing[:3]}")
    version = re.search(r'__version__ = "([^"]+)"', (SRC / "evostitch/__init__.py").read_text())
    if meta["Name"] != "evostitch" or meta["Version"] != version.group(1):
        fail(f"{path.name} is {meta['Name']} {meta['Version']}, not evostitch {version.group(1)}")
    python = meta["Requires-Python"] or ""
    if not python.startswith(">=3.11") or "<" in python:
        fail(f"Requires-Python is {python!r}: from 3.11, with no upper cap")
    for dep in meta.get_all("Requires-Dist") or []:
        if "==" in dep.split(";")[0]:
            fail(f"dependency pinned to one version: {dep}")
    extras = set(meta.get_all("Provides-Extra") or [])
    if EXTRAS - extras:
        fail(f"extras {sorted(EXTRAS - extras)} are missing")
    if "evostitch = evostitch.cli:main" not in points:
        fail("the evostitch command is not an entry point")
    print(f"{path.name}: {len(names)} files, Requires-Python {python}, extras {sorted(extras)}")


def check_sdist(path: Path) -> None:
    with tarfile.open(path) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    missing = sorted(f"src/{p}" for p in source_files() if f"src/{p}" not in names)
    if missing:
        fail(f"{path.name} lacks {missing[:3]}")
    print(f"{path.name}: {len(names)} files")


def main() -> None:
    for arg in sys.argv[1:]:
        path = Path(arg)
        check_wheel(path) if path.suffix == ".whl" else check_sdist(path)


if __name__ == "__main__":
    main()
