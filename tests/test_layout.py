"""The layout stays one way through: no import circles between the project's modules (lazy imports inside functions
count too) and no two modules of the same name in different packages (each name says what the module holds)."""
from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("model", "stream", "tracking", "damdnet")
# Names that may repeat: package markers only. Every module's name says what it holds.
ALLOWED_TWINS = {"__init__", "__main__"}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            rel = path.relative_to(REPO).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    mods["run_stream"] = REPO / "run_stream.py"
    return mods


def _imports(path: Path, name: str, mods: dict[str, Path]) -> set[str]:
    out = set()
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg.split(".")[:len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):  # a package's own __init__ is not an edge back
                out.add(t)
    return out


def test_no_import_circles() -> None:
    mods = _modules()
    graph = {m: _imports(p, m, mods) for m, p in mods.items()}
    # package __init__ re-exports make package -> submodule edges; a submodule importing a sibling through the
    # package is the same module graph, so circles are searched between modules with those edges included
    index, low, stack, on, comps = {}, {}, [], set(), []

    def strong(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    assert comps == [], f"import circles: {comps}"


def test_no_twin_module_names() -> None:
    names = Counter(Path(p).stem if Path(p).name != "__init__.py" else Path(p).parent.name
                    for p in _modules().values())
    twins = sorted(n for n, c in names.items() if c > 1 and n not in ALLOWED_TWINS)
    assert twins == [], f"modules of the same name in different packages: {twins}"


def test_every_module_compiles_without_warnings() -> None:
    """No SyntaxWarning (an invalid escape such as a diagram's backslash in a docstring): compiled fresh inside a
    caller's warnings.catch_warnings it shows up as the caller's first warning (a no-face test caught one)."""
    import warnings

    files = sorted({*_modules().values(), *(REPO / "tests").rglob("*.py"), *(REPO / "bench").rglob("*.py")})
    bad = []
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                compile(path.read_text(encoding="utf-8"), str(path), "exec")
            except (SyntaxWarning, SyntaxError) as e:
                bad.append(f"{path.relative_to(REPO)}: {e}")
    assert bad == []
