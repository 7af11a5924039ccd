"""Check the import rules of the repository (run by `make lint`); exit 1 and name each violation.

The webhook package is layered, lowest first:

    webhook.core       the pure decision: standard library and webhook.core only (no I/O libraries)
    webhook.common     errors, manifest files, the Kubernetes client, logs
    webhook.admission  the admission adapters   }  peers: neither imports the other
    webhook.certs      certificates and TLS     }
    webhook.cli        the command line (the top)

A module may import its own layer and the layers below it, never above or sideways. On top of that:
no import cycle between modules of `webhook/`; nothing in `webhook/` imports `tests`, `bench`, `hack` or
`testkit`; `bench/` and `hack/` import no `tests` module (they share code through hack/testkit).

Every import counts, at module level or inside a function, under `if TYPE_CHECKING:` too: a deferred import
is still a dependency. Only the standard library's AST is used, so the check needs nothing installed.

    python hack/check_layers.py [ROOT]     (ROOT: the repository, default: this script's)
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "webhook"
# Layer -> the layers it may import (itself included).
ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset({"core"}),
    "common": frozenset({"core", "common"}),
    "admission": frozenset({"core", "common", "admission"}),
    "certs": frozenset({"core", "common", "certs"}),
    "cli": frozenset({"core", "common", "admission", "certs", "cli"}),
}
# Top-level names of our own trees that product code must never import.
TOOLING = frozenset({"tests", "bench", "hack", "testkit"})


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module, dotted and absolute
    path: Path
    line: int


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(root: Path, path: Path) -> Iterator[Import]:
    """Every module `path` imports, absolute; `from pkg import name` yields `pkg.name` when that is a module."""
    module = module_name(root, path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, path, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                is_module = _module_path(root, candidate) is not None
                yield Import(module, candidate if is_module else source, path, node.lineno)


def _module_path(root: Path, dotted: str) -> Path | None:
    base = root.joinpath(*dotted.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == PACKAGE and len(parts) > 1 and parts[1] in ALLOWED else None


def _top(module: str) -> str:
    return module.split(".")[0]


def rule_violations(imports: list[Import]) -> Iterator[str]:
    for imp in imports:
        where = f"{imp.path}:{imp.line}: {imp.module} imports {imp.target}"
        top = _top(imp.target)
        if _top(imp.module) == PACKAGE:
            layer, target_layer = _layer(imp.module), _layer(imp.target)
            if top in TOOLING:
                yield f"{where}: product code must not import {top}"
            elif layer == "core" and top != PACKAGE and top not in sys.stdlib_module_names:
                yield f"{where}: webhook.core may import only the standard library and webhook.core"
            elif layer is not None and target_layer is not None and target_layer not in ALLOWED[layer]:
                yield f"{where}: webhook.{layer} may import only " + ", ".join(
                    f"webhook.{name}" for name in sorted(ALLOWED[layer]))
        elif _top(imp.module) in ("bench", "hack") and top == "tests":
            yield f"{where}: bench/ and hack/ must not import tests (share code through hack/testkit)"


def cycles(imports: list[Import]) -> list[list[str]]:
    """The import cycles among modules of `webhook/` (strongly connected components of more than one module,
    or a module importing itself), each as a sorted list of module names."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if _top(imp.module) == PACKAGE and _top(imp.target) == PACKAGE:
            graph.setdefault(imp.module, set()).add(imp.target)
            graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graph is small, recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def check(root: Path) -> list[str]:
    """Every violation under `root`, as one line each (empty: all rules hold)."""
    files = [p for tree in (PACKAGE, "bench", "hack") for p in sorted((root / tree).rglob("*.py"))]
    imports = [imp for path in files for imp in imports_of(root, path)]
    problems = list(dict.fromkeys(rule_violations(imports)))  # one line per import statement
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(imports)]
    return problems


def main(argv: list[str]) -> int:
    root = Path(argv[1]).resolve() if len(argv) > 1 else Path(__file__).resolve().parents[1]
    problems = check(root)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"check_layers: {len(problems)} violation(s); the rules are in hack/check_layers.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
