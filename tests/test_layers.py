"""The package's layers (docs/DESIGN.md, "Layout"): imports point down only.

import-linter checks the contracts in pyproject.toml; the part graph built here with `ast` (every
import, at module top or inside a function) checks the rules of issue 15 once more, in words."""

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "stream2dataset"
STAGES = {"ingest", "processing", "training", "service"}


def _module(path: Path) -> list[str]:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def part_graph() -> dict[str, set[str]]:
    """Top-level part (`cli`, `dataset`, `config`, ...) -> the parts its modules import."""
    graph: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        module = _module(path)
        part = module[1] if len(module) > 1 else "__init__"
        package = module if path.name == "__init__.py" else module[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name.split(".") for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                target = base + (node.module.split(".") if node.module else [])
                # `from . import x`: x may be a module of its own
                targets = [target + [a.name] for a in node.names] if not node.module else [target]
            else:
                continue
            for target in targets:
                if target[0] == "stream2dataset" and len(target) > 1 and target[1] != part:
                    graph.setdefault(part, set()).add(target[1])
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_import_linter_contracts_are_kept():
    linter = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(linter), "--no-cache"], capture_output=True, text=True, timeout=120,
                          cwd=PKG.parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_no_part_imports_the_cli_and_no_circle_between_parts():
    graph = part_graph()
    assert sorted(p for p, deps in graph.items() if "cli" in deps) == ["__main__"]
    assert _cycle(graph) is None, f"import circle between parts: {' -> '.join(_cycle(graph))}"


def test_the_stages_import_only_what_lies_below_them():
    graph = part_graph()
    assert not graph["dataset"] & STAGES, graph["dataset"]
    assert "ingest" not in graph["processing"]
    assert not graph["training"] & {"ingest", "service"}, graph["training"]
    for bottom in ("layout", "config", "sources", "transforms", "media", "names", "errors"):
        assert not graph.get(bottom, set()) & (STAGES | {"dataset", "ui", "cli"}), (bottom, graph[bottom])
