"""The house rules of the layout, read from the source: no import circles, the page on the public API only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipeline.config import REPO_ROOT

PIPELINE = REPO_ROOT / "pipeline"
PAGE_FILES = [REPO_ROOT / "app.py", *sorted((REPO_ROOT / "page").glob("*.py"))]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, *, with_names: bool = False) -> set[str]:
    """Every module ``path`` imports, at any depth (function-level imports count too).

    ``with_names`` adds ``module.name`` for each ``from module import name`` (a name may be a submodule).
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if with_names:
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def package_of(module: str) -> str:
    """``pipeline.faces.align`` → ``pipeline.faces``; top-level modules stay themselves."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else module


def test_no_import_circles_between_the_pipelines_packages_and_modules() -> None:
    # A package's __main__ is an entry point that no module imports, so it cannot close a circle at import time
    # (pipeline/weights/__main__.py wires `verify` to pipeline.verification, which sits above pipeline.weights).
    modules = {module_name(path): path for path in PIPELINE.rglob("*.py") if path.name != "__main__.py"}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {package_of(target) for target in imported_modules(path, with_names=True) if target in modules}
        graph.setdefault(package_of(name), set()).update(targets - {package_of(name)})

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in graph.get(start, ())
        )

    circles = sorted(node for node in graph if reaches(node, node, {node}))
    assert not circles, f"these packages/modules import each other in a circle: {circles}"


@pytest.mark.parametrize("path", PAGE_FILES, ids=lambda path: path.name)
def test_the_page_uses_only_the_pipelines_public_api(path: Path) -> None:
    deep = sorted(name for name in imported_modules(path) if name.startswith("pipeline."))
    assert not deep, f"{path.name} imports pipeline internals {deep}; export what it needs from pipeline/__init__.py"


def test_the_pipeline_never_imports_the_page() -> None:
    for path in PIPELINE.rglob("*.py"):
        page_imports = {name for name in imported_modules(path) if name.split(".")[0] in ("gradio", "spaces", "page")}
        assert not page_imports, f"{path.relative_to(REPO_ROOT)} imports {sorted(page_imports)}"
