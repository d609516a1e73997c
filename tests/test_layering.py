"""Dependencies point one way: `consumers` may import `service`, never the reverse (but the CLI)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The CLI is the composition root, where both packages meet by design (STYLE.md convention 1).
COMPOSITION_ROOT = set((ROOT / "service" / "cli").glob("*.py"))


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_service_never_imports_consumers() -> None:
    """No module of `service` outside the CLI package imports from `consumers`."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m for m in imported_modules(path) if m.split(".")[0] == "consumers"
        )
        for path in (ROOT / "service").rglob("*.py")
        if path not in COMPOSITION_ROOT
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_check_sees_imports(tmp_path: Path) -> None:
    """The detector finds every form of a `consumers` import (so the test above can fail)."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import consumers.chargebee\nfrom consumers import mapping\ndef f():\n    import consumers\n"
    )
    assert imported_modules(sample) == {"consumers.chargebee", "consumers"}
