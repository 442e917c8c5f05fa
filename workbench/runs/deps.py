"""What a result depends on: workbench modules found from the import graph, library versions.

A cached model or a finished run may only be served again while everything that produced it is
unchanged. Listing the modules by hand goes stale the first time someone moves a helper into a new
file. Here the list is *derived*: :func:`closure` reads the ``import`` statements of a module (its
whole file, so imports inside functions count too), follows every one that stays inside the
workbench (or a user's plug-in), and repeats until nothing new appears. A package whose
``__init__`` imports its modules by name at run time (the method registries, the lazy top-level
``workbench`` API) counts as importing all of them. :func:`source_hashes` gives the sha256 of each
module in the closure; cache keys and grid run ids include it, so editing ``metrics.py`` changes
the key of every result that the metric touched and of nothing else.

:func:`environment` gives the other half: the versions of the libraries whose behaviour decides the
numbers (torch kernels, transformers' model code, tokenizers, numpy/scipy statistics, rouge-score),
read from package metadata without importing them, and :func:`machine`: what of the machine moves
the numbers (CPU threads, CPU model and kernels, the compute device, torch's determinism flags).
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from workbench.runs import io

PACKAGE = "workbench"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
VERSIONED = ("torch", "transformers", "tokenizers", "numpy", "scipy", "rouge-score", "safetensors")


def module_file(name: str) -> Path | None:
    """The source file of module ``name`` (a workbench module by path, without importing it)."""
    if name == PACKAGE or name.startswith(PACKAGE + "."):
        base = PACKAGE_DIR.joinpath(*name.split(".")[1:])
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                return candidate
        return None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    origin = spec.origin if spec else None
    return Path(origin) if origin and os.path.isfile(origin) and origin.endswith(".py") else None


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _submodules(name: str, path: Path) -> set[str]:
    return {f"{name}.{p.stem if p.suffix == '.py' else p.name}" for p in path.parent.iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}


def _with_parents(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def _resolve(node: ast.ImportFrom, name: str, path: Path) -> str:
    if not node.level:
        return node.module or ""
    package = name if _is_package(path) else name.rpartition(".")[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def _imports_by_name(nodes: list[ast.AST]) -> bool:
    """Whether a package imports its modules by name at run time: ``import_module(f"{__name__}.…")``,
    or hands its ``__path__`` to a helper that does (``registry.import_all(__name__, __path__)``)."""
    for node in nodes:
        if not isinstance(node, ast.Call):
            continue
        if any(isinstance(a, ast.Name) and a.id == "__path__" for a in node.args):
            return True
        if getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.JoinedStr) and any(isinstance(v, ast.FormattedValue) and
                                                      getattr(v.value, "id", "") == "__name__" for v in arg.values):
                return True
    return False


def _in_package(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def direct_imports(name: str, *, import_time_only: bool = False) -> frozenset[str]:
    """The modules ``name``'s file imports, parents included (importing ``a.b`` runs ``a``).

    By default every import in the file counts, those inside functions too (the function may run).
    ``import_time_only`` keeps the module-level ones: what merely importing the module executes,
    which is all a package contributes when it is only the parent of the module asked for (the
    top-level ``workbench`` loads its API lazily, inside ``__getattr__``).
    """
    path = module_file(name)
    return _direct_imports(name, path, path.stat().st_mtime_ns, import_time_only) if path else frozenset()


def _import_nodes(tree: ast.Module, import_time_only: bool) -> list[ast.AST]:
    """All nodes of the file, or only those that run when the module is imported."""
    if not import_time_only:
        return list(ast.walk(tree))
    functions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
    nodes, todo = [], [n for n in tree.body if not isinstance(n, functions)]
    while todo:  # module level, including inside if/try/with/for and class bodies, not inside functions
        node = todo.pop()
        nodes.append(node)
        todo += [c for c in ast.iter_child_nodes(node) if not isinstance(c, functions)]
    return nodes


@cache
def _direct_imports(name: str, path: Path, mtime_ns: int, import_time_only: bool) -> frozenset[str]:
    nodes = _import_nodes(ast.parse(path.read_text(encoding="utf-8")), import_time_only)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found |= _with_parents(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, name, path)
            found |= _with_parents(base)
            if _in_package(base):  # `from workbench.x import y` may name the module workbench.x.y
                found |= {f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}")}
    if _is_package(path) and _imports_by_name(nodes):
        found |= _submodules(name, path)
    return frozenset(found)


def closure(roots: Iterable[str]) -> list[str]:
    """Every module reachable from ``roots`` through imports, staying inside the workbench and the roots.

    A module named in an import (or a root) counts with all its imports; a package reached only as
    the parent of such a module (importing ``a.b.c`` runs ``a`` and ``a.b`` first) counts with its
    import-time imports.
    """
    roots = set(roots)
    full: set[str] = set()
    partial: set[str] = set()
    todo = [(r, True) for r in roots] + [(p, False) for r in roots for p in _with_parents(r) - {r}]
    while todo:
        name, whole = todo.pop()
        if name in full or (not whole and name in partial) or module_file(name) is None:
            continue
        (full if whole else partial).add(name)
        named = direct_imports(name, import_time_only=not whole)
        parents = set().union(*(_with_parents(m) - {m} for m in named)) if named else set()
        todo += [(m, m in roots or m not in parents) for m in named if m in roots or _in_package(m)]
    return sorted(full | partial)


def source_hashes(roots: Iterable[str]) -> dict[str, str]:
    """sha256 of the source of every module in :func:`closure` of ``roots``."""
    roots = list(roots)
    missing = [r for r in roots if module_file(r) is None]
    if missing:
        raise ValueError(f"cannot find the source of module(s) {missing}")
    return {name: _file_hash(module_file(name)) for name in closure(roots)}


def _file_hash(path: Path) -> str:
    stat = path.stat()
    return _hash_of(path, stat.st_mtime_ns, stat.st_size)


@cache
def _hash_of(path: Path, mtime_ns: int, size: int) -> str:
    return io.sha256_file(path)


def environment() -> dict[str, str | None]:
    """Versions of the libraries that decide the numbers (from package metadata, nothing imported)."""
    from workbench.runs.provenance import installed_version

    return {dist: installed_version(dist) for dist in VERSIONED}


def machine(device: str | None = None) -> dict[str, Any]:
    """What of this machine moves a result's numbers, for its cache key: the CPU threads torch computes
    with, the CPU model and torch's CPU kernels and BLAS (:func:`workbench.runs.provenance.cpu_info`: the
    order of float reductions, which tiny-model training amplifies; AUES moved by up to 0.07 between 1
    and 2 threads, 0.21 between two CPU models), the compute device (``device``: its type, and the GPU's
    name on CUDA; None: ``"auto"``'s choice) and torch's determinism flags
    (:func:`workbench.models.use_deterministic`). The model dtype is part of each artefact's inputs."""
    import torch

    from workbench.models import resolve_device
    from workbench.runs.provenance import compute_threads

    device = resolve_device(device or "auto")
    found = {"threads": compute_threads(), **_cpu(), "device": device.type,
             "deterministic": torch.are_deterministic_algorithms_enabled()}
    if device.type == "cuda":
        found |= {"gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda,
                  "cublas_workspace": os.environ.get("CUBLAS_WORKSPACE_CONFIG", ""),
                  "cudnn_deterministic": torch.backends.cudnn.deterministic}
    return found


@cache
def _cpu() -> dict[str, str]:
    from workbench.runs.provenance import cpu_info

    return cpu_info()


# -- notebooks ------------------------------------------------------------------------------------------
def _code_cells(path: Path) -> list[str]:
    import nbformat

    return [c.source for c in nbformat.read(str(path), as_version=4).cells if c.cell_type == "code"]


def notebook_code_hash(path: Path) -> str:
    """Hash of the code cells only: outputs and markdown edits do not invalidate grid runs."""
    return io.digest(_code_cells(path))


def notebook_imports(path: Path) -> list[str]:
    """The workbench modules the notebook's code cells import (IPython magics and shell lines skipped)."""
    found = set()
    for source in _code_cells(path):
        code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(code)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:  # a submodule, or an attribute of the module
                names = [f"{node.module}.{a.name}" if module_file(f"{node.module}.{a.name}") else node.module
                         for a in node.names]
            found |= {n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")}
    return sorted(found)


def code_fingerprint(path: Path) -> str:
    """What a notebook's results depend on besides its parameters: its code cells, the workbench
    modules they import (with everything those import) and the library versions."""
    return io.digest({"cells": notebook_code_hash(path), "sources": source_hashes(notebook_imports(path)),
                      "environment": environment()})


def plugin_fingerprint(params: Mapping[str, Any]) -> dict[str, str]:
    """Content hashes of the run's plug-ins (files by path, modules with what they import)."""
    out = {}
    for entry in params.get("plugins") or []:
        path = Path(entry)
        out |= {entry: _file_hash(path)} if path.is_file() else source_hashes([entry])
    return out
