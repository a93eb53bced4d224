"""The folders are layers, and imports only go down: a part may use its own folder and the layers below it, never a
layer beside it or above it. The core never imports the window (test_core_no_qt checks it loads no Qt either).

Every `import` and `from ... import` of explorer is counted, inside functions and TYPE_CHECKING blocks too: a lazy
import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import explorer

ROOT = Path(explorer.__file__).parent

# (part, rank): a part imports only parts of a lower rank, and itself. A part is a folder, or a top-level module.
LAYERS = {
    # the core, bottom up: the values and rules every part shares (errors and numbers, the frozen types, a token's
    # text); what needs only them; the engine, the files and the values on a tree (tree + rewards); what builds on the
    # engine; the session that holds a run's results
    "core.errors": 0, "core.numbers": 0, "core.types": 1, "core.token_text": 2,
    "core.models": 3, "core.tree": 3, "core.rl": 3,
    "core.engine": 4, "core.files": 4, "core.values": 4,
    "core.remote": 5, "core.reference": 5,
    "core.session": 6, "core.responses": 6,
    # a run over a dataset: the engine's calls, the rewards and the files, a group at a time
    "core.dataset": 7,
    # the window, bottom up: shared widgets; the parts of the window; the views that combine them; the window
    "gui.widgets": 10, "gui.panes": 11, "gui.tree": 11, "gui.run": 11, "gui.side_panel": 11,
    "gui.views": 12, "gui.window": 13, "gui.app": 14,
    "cli_dataset": 19, "cli": 20, "__main__": 21,  # cli_dataset: the dataset commands (generate's run, stats, export)
}


def part_of(module: str) -> str:
    """explorer.core.engine.local -> core.engine; explorer.core.types -> core.types; explorer.cli -> cli."""
    parts = module.split(".")[1:]
    if not parts:
        return ""
    if parts[0] in ("core", "gui") and len(parts) >= 2:
        return f"{parts[0]}.{parts[1]}"
    return parts[0]


def imports_of(path: Path, module: str) -> set[str]:
    found = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "explorer"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "explorer":
                continue
            for alias in node.names:  # `from explorer.core import files` names a part; a function names its module
                candidate = f"{base}.{alias.name}"
                is_module = (ROOT.parent / Path(*candidate.split("."))).with_suffix(".py").exists() or \
                    (ROOT.parent / Path(*candidate.split("."))).is_dir()
                found.add(candidate if is_module else base)
    return found


def modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts)
        yield path, name.removesuffix(".__init__")


def test_every_part_has_a_layer():
    parts = {part_of(name) for _path, name in modules()} - {"", "core", "gui"}
    assert parts - set(LAYERS) == set(), "a new folder or top-level module needs its place in LAYERS"


def test_imports_only_go_down():
    wrong = []
    for path, name in modules():
        own = part_of(name)
        if own in ("", "core", "gui"):
            continue  # the packages' own __init__ files
        for target in imports_of(path, name):
            other = part_of(target)
            if other in (own, "", "core", "gui"):
                continue
            if LAYERS[other] >= LAYERS[own]:
                wrong.append(f"{name} imports {target} ({own} may not use {other})")
    assert wrong == []


def test_the_check_sees_a_wrong_import(tmp_path):
    """The rule bites: a core module importing the window, and one importing a part beside it, are both found."""
    bad = tmp_path / "bad.py"
    bad.write_text("from explorer.gui.window.main_window import MainWindow\nimport explorer.core.rl.stats\n")
    found = imports_of(bad, "explorer.core.tree.bad")
    assert {part_of(t) for t in found} == {"gui.window", "core.rl"}
    assert all(LAYERS[part_of(t)] >= LAYERS["core.tree"] for t in found)
