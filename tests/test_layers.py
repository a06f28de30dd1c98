"""Layers point down: the bottom (records, batches, seed data, engines, the judge...) imports nothing
above it; `stages/` and `eval/` build on it and never import each other; no two modules import each other."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "selfreward"
TOP = {
    "selfreward.cli",
    "selfreward.launch",
    "selfreward.summary",
    "selfreward.report",
    "selfreward.plots",
    "selfreward.learned",
    "selfreward.testing",
    "selfreward.__main__",
}
"""Modules that compose the layers (commands, recipes, the report): allowed to import anything."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every selfreward module -> the selfreward modules it imports (at the top or inside functions)."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("selfreward"):
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names |= {a.name for a in node.names if a.name.startswith("selfreward")}
        found[module_name(path)] = names
    return found


def layer(name: str) -> str:
    if name in TOP or name.startswith("selfreward.recipes"):
        return "top"
    for middle in ("selfreward.stages", "selfreward.eval"):
        if name == middle or name.startswith(middle + "."):
            return middle
    return "bottom"


def test_stages_and_eval_never_import_each_other_and_the_bottom_nothing_above_it():
    wrong = []
    for module, targets in imports().items():
        for target in targets:
            here, there = layer(module), layer(target)
            if (
                (there == "top" and here != "top")
                or (here == "bottom" and there != "bottom")
                or {here, there} == {"selfreward.stages", "selfreward.eval"}
            ):
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_no_two_modules_import_each_other():
    found = imports()
    pairs = sorted(
        {tuple(sorted((a, b))) for a, targets in found.items() for b in targets if a != b and a in found.get(b, set())}
    )
    assert pairs == []
