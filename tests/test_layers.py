"""The package's import structure: no import circle between packages, and no module importing
from a higher layer than its own.

Every module of ``arl_mpi/`` is parsed with :mod:`ast` (nothing is imported); every
``import arl_mpi...``, ``from arl_mpi... import ...`` and relative import counts, at module
level or inside a function (a lazy import is still a dependency). :data:`LAYERS` is the layer
table (top first; docs/architecture.md shows the same table): a module may import from its
own layer or any layer below; imports within a layer must not form a circle between packages.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "arl_mpi"

#: Layers, top first. An entry names a module or a package (and then every module in it); the
#: most specific entry wins (``arl_mpi.pipeline.__main__`` is L6 although ``arl_mpi.pipeline``
#: is L5). ``arl_mpi`` alone is the package's ``__init__.py``.
LAYERS: dict[str, tuple[str, ...]] = {
    "L6 entry points": (
        "arl_mpi.pipeline.__main__",
        "arl_mpi.simulate",
        "arl_mpi.ingest",
        "arl_mpi.store",
        "arl_mpi.cli",
    ),
    "L5 pipelines": ("arl_mpi.pipeline",),
    "L4 cluster and task graphs": ("arl_mpi.cluster", "arl_mpi.graphs"),
    "L3 algorithms and test data": (
        "arl_mpi.deconvolution",
        "arl_mpi.calibration",
        "arl_mpi.simulation",
        "arl_mpi.testing",
    ),
    "L2 imaging kernels and I/O": ("arl_mpi.imaging", "arl_mpi.io"),
    "L1 data model and foundations": (
        "arl_mpi.models",
        "arl_mpi.errors",
        "arl_mpi.constants",
        "arl_mpi.mpienv",
        "arl_mpi._offline",
        "arl_mpi.progress",
        "arl_mpi",
    ),
}


@dataclass(frozen=True)
class Import:
    """``module`` (in ``path``, line ``lineno``) imports ``target``."""

    module: str
    path: str
    lineno: int
    target: str

    def where(self) -> str:
        return f"{self.path}:{self.lineno} ({self.module} imports {self.target})"


def module_name(path: Path, root: Path = ROOT) -> str:
    """Dotted name of a source file (``arl_mpi/io/__init__.py`` -> ``arl_mpi.io``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package: dotted name -> path."""
    return {module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}


def imports_in(module: str, is_package: bool, source: str, known: set[str], path: str = "") -> list[Import]:
    """The ``arl_mpi`` modules ``module`` imports (absolute and relative, at any depth).

    ``from X import y`` counts as an import of ``X.y`` when that is a module in ``known``,
    else of ``X``.
    """
    out: list[Import] = []
    here = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source, filename=path or module)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = here[: len(here) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in dict.fromkeys(targets):
            if t == PACKAGE or t.startswith(PACKAGE + "."):
                out.append(Import(module, path or module, node.lineno, t))
    return out


def collect(root: Path = ROOT) -> tuple[dict[str, Path], list[Import]]:
    """All modules of the package and all their ``arl_mpi`` imports."""
    modules = discover(root)
    known = set(modules)
    imports: list[Import] = []
    for name, path in modules.items():
        rel = str(path.relative_to(root))
        imports += imports_in(name, path.name == "__init__.py", path.read_text(), known, rel)
    return modules, imports


def layer_of(module: str, layers: dict[str, tuple[str, ...]] = LAYERS) -> tuple[int, str] | None:
    """(rank, layer name) of ``module`` (rank 1 = bottom) by its most specific entry, or None."""
    best: tuple[int, int, str] | None = None
    for i, (name, entries) in enumerate(layers.items()):
        rank = len(layers) - i
        for e in entries:
            hit = module == e or (e != PACKAGE and module.startswith(e + "."))
            if hit and (best is None or len(e) > best[0]):
                best = (len(e), rank, name)
    return None if best is None else (best[1], best[2])


def node_of(module: str) -> str:
    """The package-level node of a module: ``arl_mpi.<subpackage or top-level module>``."""
    return ".".join(module.split(".")[:2])


def unlayered(modules: list[str], layers: dict[str, tuple[str, ...]] = LAYERS) -> list[str]:
    return [m for m in modules if layer_of(m, layers) is None]


def upward_imports(imports: list[Import], layers: dict[str, tuple[str, ...]] = LAYERS) -> list[str]:
    """One message per import from a lower layer to a higher one."""
    msgs = []
    for imp in imports:
        src, dst = layer_of(imp.module, layers), layer_of(imp.target, layers)
        if src is not None and dst is not None and dst[0] > src[0]:
            msgs.append(f"{imp.where()}: {src[1]} must not import from {dst[1]}")
    return msgs


def package_circles(imports: list[Import]) -> list[str]:
    """One message per import circle between packages (strongly connected components)."""
    edges: dict[str, dict[str, list[Import]]] = {}
    for imp in imports:
        a, b = node_of(imp.module), node_of(imp.target)
        if a != b:
            edges.setdefault(a, {}).setdefault(b, []).append(imp)
            edges.setdefault(b, {})
    # Tarjan's strongly connected components (iterative)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    sccs: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
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
                    sccs.append(sorted(comp))
    msgs = []
    for comp in sccs:
        members = set(comp)
        via = [imp.where() for a in comp for b, imps in sorted(edges[a].items()) if b in members for imp in imps]
        msgs.append(f"import circle between {', '.join(comp)}; via:\n    " + "\n    ".join(via))
    return msgs


# ----------------------------------------------------------------------------------------------
# The checks on the package


@pytest.fixture(scope="module")
def package() -> tuple[dict[str, Path], list[Import]]:
    return collect()


def test_every_module_has_a_layer(package):
    modules, _ = package
    assert len(modules) > 20, "found too few modules: is ROOT right?"
    missing = unlayered(sorted(modules))
    assert not missing, "modules in no layer (add them to LAYERS in tests/test_layers.py): " + ", ".join(missing)


def test_layer_entries_name_existing_modules(package):
    modules, _ = package
    stale = [e for entries in LAYERS.values() for e in entries if e not in modules]
    assert not stale, f"LAYERS names modules or packages that do not exist: {stale}"


def test_no_import_circle_between_packages(package):
    _, imports = package
    circles = package_circles(imports)
    assert not circles, "\n".join(circles)


def test_no_import_from_a_lower_layer_to_a_higher_one(package):
    _, imports = package
    bad = upward_imports(imports)
    assert not bad, f"{len(bad)} upward import(s):\n" + "\n".join(bad)


# ----------------------------------------------------------------------------------------------
# The checker itself finds what it should


def test_imports_in_resolves_absolute_relative_and_lazy_imports():
    known = {"arl_mpi", "arl_mpi.io", "arl_mpi.io.store", "arl_mpi.imaging", "arl_mpi.imaging.dft",
             "arl_mpi.imaging.weighting", "arl_mpi.models"}  # fmt: skip
    src = (
        "import numpy\n"
        "from .dft import C_LIGHT\n"
        "from . import dft\n"
        "from ..io import store\n"
        "from arl_mpi.models import Image\n"
        "def f():\n"
        "    import arl_mpi.io.store\n"
        "    from arl_mpi import __version__\n"
    )
    got = [(i.lineno, i.target) for i in imports_in("arl_mpi.imaging.weighting", False, src, known)]
    assert got == [(2, "arl_mpi.imaging.dft"), (3, "arl_mpi.imaging.dft"), (4, "arl_mpi.io.store"),
                   (5, "arl_mpi.models"), (7, "arl_mpi.io.store"), (8, "arl_mpi")]  # fmt: skip
    # in a package's __init__.py, '.' is the package itself
    got = [i.target for i in imports_in("arl_mpi.imaging", True, "from .dft import x\n", known)]
    assert got == ["arl_mpi.imaging.dft"]


def test_layer_of_most_specific_entry_wins():
    assert layer_of("arl_mpi.pipeline.__main__") == (6, "L6 entry points")
    assert layer_of("arl_mpi.pipeline.prepare") == (5, "L5 pipelines")
    assert layer_of("arl_mpi") == (1, "L1 data model and foundations")
    assert layer_of("arl_mpi.imaging.dft") == (2, "L2 imaging kernels and I/O")
    assert layer_of("arl_mpi.nowhere") is None  # the root entry does not swallow everything


def test_checker_reports_upward_import_and_circle():
    imports = [
        Import("arl_mpi.models", "arl_mpi/models.py", 3, "arl_mpi.pipeline.ical"),
        Import("arl_mpi.imaging.serial", "arl_mpi/imaging/serial.py", 9, "arl_mpi.io.store"),
        Import("arl_mpi.io.store", "arl_mpi/io/store.py", 5, "arl_mpi.imaging.dft"),
        Import("arl_mpi.io.ms", "arl_mpi/io/ms.py", 7, "arl_mpi.io.store"),
    ]
    bad = upward_imports(imports)
    assert bad == ["arl_mpi/models.py:3 (arl_mpi.models imports arl_mpi.pipeline.ical): "
                   "L1 data model and foundations must not import from L5 pipelines"]  # fmt: skip
    circles = package_circles(imports)
    assert len(circles) == 1
    assert circles[0].startswith("import circle between arl_mpi.imaging, arl_mpi.io; via:")
    assert "arl_mpi/imaging/serial.py:9" in circles[0] and "arl_mpi/io/store.py:5" in circles[0]
    assert package_circles(imports[:1] + imports[3:]) == []
