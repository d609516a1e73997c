"""What gets installed is what was reviewed: hashed lock files, used by the Makefile (and so CI).

`make lock` re-resolves them from pyproject.toml with pip-tools; these tests fail when a
dependency is added to pyproject.toml without re-locking, or an install path bypasses the hashes.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LOCKS = {"runtime": REPO / "requirements" / "runtime.lock", "test": REPO / "requirements" / "test.lock"}
_PIN = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)(?: ;.*)? \\\n((?:    --hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", re.M
)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    return {canonical(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in requirements}


def pinned(lock: Path) -> dict[str, str]:
    """name -> version of every entry, each checked to carry at least one sha256 hash."""
    text = lock.read_text()
    found = {canonical(m.group(1)): m.group(2) for m in _PIN.finditer(text)}
    entries = [line for line in text.splitlines() if re.match(r"^[A-Za-z0-9]", line)]
    assert len(entries) == len(found), "every locked requirement is pinned with == and hashed"
    return found


def project() -> dict[str, list[str]]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {
        "runtime": data["dependencies"],
        "test": data["dependencies"] + data["optional-dependencies"]["test"],
    }


@pytest.mark.parametrize("which", sorted(LOCKS))
def test_every_declared_dependency_is_locked_with_hashes(which: str) -> None:
    locked = pinned(LOCKS[which])
    missing = requirement_names(project()[which]) - set(locked)
    assert not missing, f"run `make lock`: {sorted(missing)} not in {LOCKS[which].name}"


@pytest.mark.parametrize("which", sorted(LOCKS))
def test_the_locks_name_no_machine_specific_index(which: str) -> None:
    text = LOCKS[which].read_text()
    assert "--index-url" not in text and "--extra-index-url" not in text and "--find-links" not in text


def test_the_makefile_installs_dependencies_only_by_hash() -> None:
    """Every `pip install` either takes a lock with --require-hashes, or the project with --no-deps."""
    installs = [
        line.strip() for line in (REPO / "Makefile").read_text().splitlines() if "pip install" in line
    ]
    project_installs = [line for line in installs if "pip-tools" not in line]  # `make lock`'s own tool
    assert project_installs
    for line in project_installs:
        hashed = "--require-hashes -r requirements/" in line
        assert hashed or "--no-deps" in line, line
