"""Fail when requirements/lock.txt no longer satisfies the requirements it was made from.

Someone who adds a dependency to pyproject.toml (or audiocraft-deps.txt) and forgets
``requirements/lock.sh`` would otherwise get an install without it and a puzzling ImportError.
Offline and quick: it only reads files. Run by scripts/test.sh; usage: python check_lock.py.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def locked_versions(lock: Path = LOCK) -> dict[str, str]:
    """Package name (canonical) → locked version."""
    pins = (PIN.match(line) for line in lock.read_text().splitlines())
    return {canonicalize_name(m[1]): m[2] for m in pins if m}


def declared_requirements(root: Path = ROOT) -> list[Requirement]:
    """musicbot's dependencies, its ``test`` extra and requirements/audiocraft-deps.txt."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    lines = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    for line in (root / "requirements" / "audiocraft-deps.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return [Requirement(line) for line in lines]


def problems(locked: dict[str, str], wanted: list[Requirement]) -> list[str]:
    """Why the lock does not satisfy ``wanted``; empty when it does."""
    found = []
    for req in wanted:
        version = locked.get(canonicalize_name(req.name))
        if version is None:
            found.append(f"{req} is not in the lock")
        elif not req.specifier.contains(version, prereleases=True):
            found.append(f"{req} but the lock has {req.name}=={version}")
    return found


def main() -> int:
    """Print what is missing and return 1, or return 0 when the lock is in step."""
    found = problems(locked_versions(), declared_requirements())
    for problem in found:
        print(f"requirements/lock.txt is out of date: {problem}", file=sys.stderr)
    if found:
        print("Run requirements/lock.sh and commit requirements/lock.txt.", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
