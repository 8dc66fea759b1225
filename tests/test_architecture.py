"""The architecture of docs/architecture.md, checked on the code: who imports whom, module
sizes, and no import cycles.

The import table is parsed from the doc's ```imports block (one row per unit: ``unit: deps``),
so the page and the test cannot drift apart. Imports are found with ``ast``: module-level and
function-level, ``import demgen.x``, ``from demgen.x import y`` and relative imports alike.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "demgen"
DOC = ROOT / "docs" / "architecture.md"
MAX_LINES = 450  # the "about 400", with a margin; split modules along their concerns
# module (path under src/demgen) -> why it may stay longer; keep this empty where possible
LONG_MODULE_EXCEPTIONS: dict[str, str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _unit(module: str) -> str:
    """The unit of a module: its first name under ``demgen.`` (``demgen`` for the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "demgen"


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported demgen module) for every import in the file, at any depth."""
    modules = _modules()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((node.lineno, sub if sub in modules else target))
    return [(line, t) for line, t in found if t == "demgen" or t.startswith("demgen.")]


def _rules() -> dict[str, set[str]]:
    """``{unit: units it may import}`` from the doc's ```imports block ('*': any)."""
    text = DOC.read_text()
    m = re.search(r"^```imports\n(.*?)^```", text, re.M | re.S)
    assert m, f"{DOC}: no ```imports block"
    rules: dict[str, set[str]] = {}
    for raw in m.group(1).splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        unit, sep, deps = line.partition(":")
        assert sep, f"{DOC}: bad row {raw!r} (want 'unit: dep dep ...')"
        unit = unit.strip()
        assert unit not in rules, f"{DOC}: unit {unit!r} has two rows"
        rules[unit] = set() if deps.strip() == "-" else set(deps.split())
    return rules


def test_the_import_table_names_every_unit_and_only_units():
    rules = _rules()
    units = {_unit(m) for m in _modules()} - {"demgen"}
    assert sorted(units - rules.keys()) == [], "units without a row in docs/architecture.md"
    assert sorted(rules.keys() - units) == [], "rows of docs/architecture.md naming no unit"
    named = set().union(*rules.values()) - {"*"}
    assert sorted(named - units) == [], "dependencies naming no unit"


def test_every_import_follows_the_table():
    rules = _rules()
    bad = []
    for module, path in _modules().items():
        unit = _unit(module)
        allowed = rules.get(unit, set())
        for line, target in _imports(module, path):
            other = _unit(target)
            if other in (unit, "demgen") or "*" in allowed or other in allowed:
                continue
            bad.append(f"{path.relative_to(ROOT)}:{line}: {unit} imports {target} ({other})")
    assert bad == [], "imports against docs/architecture.md:\n" + "\n".join(dict.fromkeys(bad))


def test_the_root_package_holds_only_the_version():
    tree = ast.parse((SRC / "__init__.py").read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert imports == [], "demgen/__init__.py must stay import-free (everyone may import it)"


def test_no_module_is_too_long():
    long = {}
    for path in _modules().values():
        rel = str(path.relative_to(SRC))
        n = len(path.read_text().splitlines())
        if n > MAX_LINES and rel not in LONG_MODULE_EXCEPTIONS:
            long[rel] = n
    assert long == {}, f"modules over {MAX_LINES} lines (split them along their concerns)"
    for rel in LONG_MODULE_EXCEPTIONS:
        assert (SRC / rel).is_file(), f"stale exception {rel}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_no_import_cycles_between_modules():
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        graph[module]
        for _, target in _imports(module, path):
            if target in modules and target != module:
                graph[module].add(target)
    assert _cycles(graph) == []


@pytest.mark.parametrize(("a", "b"), [("demgen.data.synth.world", "demgen.data.synth.stereo")])
def test_the_synth_world_stereo_cycle_is_gone(a, b):
    modules = _modules()
    imported_by_b = {t for _, t in _imports(b, modules[b])}
    assert a not in imported_by_b, f"{b} imports {a}: the cycle is back"


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# file (under src/demgen) -> why it may still spell a shared definition itself
ONE_DEFINITION_PENDING: dict[str, str] = {}


def _spellings(tree: ast.AST) -> dict[str, bool]:
    """Which shared definitions a module spells itself (instead of importing io's)."""
    found = {"Grid": False, "NODATA": False, "no CRS": False, "band names": False}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Grid":
            found["Grid"] = True
        elif (
            isinstance(node, ast.UnaryOp)
            and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant)
            and node.operand.value == 9999
        ):
            found["NODATA"] = True
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found["no CRS"] |= "no CRS (georeferencing is required)" in node.value
        elif isinstance(node, ast.JoinedStr):
            parts = [v.value for v in node.values if isinstance(v, ast.Constant)]
            found["band names"] |= any(str(p).endswith("band") for p in parts)
    return found


def test_grid_nodata_no_crs_error_and_band_names_have_one_definition():
    homes = {"Grid": "io/grid.py", "NODATA": "io/raster.py", "no CRS": "io/raster.py",
             "band names": "io/raster.py"}  # fmt: skip
    bad = []
    for path in _modules().values():
        rel = str(path.relative_to(SRC))
        for what, spelled in _spellings(ast.parse(path.read_text())).items():
            if spelled and rel != homes[what] and rel not in ONE_DEFINITION_PENDING:
                bad.append(f"{rel}: defines its own {what} (use the one in {homes[what]})")
    assert bad == []
