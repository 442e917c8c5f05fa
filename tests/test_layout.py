"""The layout issue's guarantees: registries own their knowledge, and a user's own method is one file.

* No module of the package outside a method's own file names a registered objective or localizer
  (as a string or an ``lr_<name>``/``<name>_<field>`` key): pipeline, experiments, distributed
  training and config read what they need from the method's class.
* An objective written in a user's file, outside the package, runs from the CLI through the
  ``plugins`` parameter and its rows appear in the results.
* The science modules do not import the infrastructure, and no two modules of the package import
  each other, directly or around a loop (imports inside functions count: they run when called).
* A submodule name means the submodule: ``import workbench.experiments.controlled as m`` gives the
  module, not a function of the same name.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from workbench import localizers as loc
from workbench import objectives as obj
from workbench.runs import deps

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "workbench"


def _own_file(name: str, registry: dict) -> Path:
    return Path(sys.modules[registry[name].__module__].__file__).resolve()


def _names_in(path: Path) -> tuple[set[str], set[str]]:
    """String constants of a module, and the attribute names it reads (``cfg.lr_npo``, ``cfg.npo_beta``)."""
    tree = ast.parse(path.read_text())
    constants, attributes = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            constants.add(node.value)
        elif isinstance(node, ast.Attribute):
            attributes.add(node.attr)
    return constants, attributes


@pytest.mark.unit
@pytest.mark.parametrize("kind, registry", [("objective", obj.OBJECTIVES), ("localizer", loc.LOCALIZERS)])
def test_no_module_names_a_method_outside_its_own_file(kind, registry):
    offenders = {}
    for name in registry:
        own = _own_file(name, registry)
        for path in PACKAGE.rglob("*.py"):
            if path.resolve() == own:
                continue
            fields = {f.name for f in dataclasses.fields(registry[name])}
            keys = {name, f"lr_{name}"} | {f"{name}_{f}" for f in fields}
            constants, attributes = _names_in(path)
            hits = (constants & keys) | (attributes & (keys - {name}))  # `np.random` is not the localizer
            if hits:
                offenders.setdefault(name, []).append(f"{path.relative_to(ROOT)}: {sorted(hits)}")
    assert not offenders, f"{kind}s named outside their own file: {offenders}"


@pytest.mark.unit
def test_science_modules_do_not_import_infrastructure():
    science = ["regions", "weight_regions", "delta", "likelihood", "precision", "training", "dense_masked", "metrics",
               "aggregates", "evaluation", "mixing", "curves", "stats"]
    packages = ["objectives", "localizers", "data", "models"]
    paths = [PACKAGE / f"{m}.py" for m in science] + [p for pkg in packages for p in (PACKAGE / pkg).rglob("*.py")]
    bad = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                    ("workbench.runs", "workbench.experiments", "workbench.viz")):
                bad.append(f"{path.relative_to(ROOT)} imports {node.module}")
    assert not bad, bad


def _modules() -> list[str]:
    names = []
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names)


def import_cycles(modules: list[str]) -> list[list[str]]:
    """Strongly connected components (more than one module) of the package's import graph, every
    import of a file counted (:func:`workbench.runs.deps.direct_imports`). An edge to the module's
    own parent package is left out: importing ``a.b`` runs ``a`` first, which is how packages work,
    not a loop in the design."""
    graph = {m: {d for d in deps.direct_imports(m) if d in modules and d != m and not m.startswith(d + ".")}
             for m in modules}

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    reachable = {m: reach(m) for m in modules}
    cycles = {frozenset({m} | {o for o in reachable[m] if m in reachable[o]}) for m in modules if m in reachable[m]}
    return sorted(sorted(c) for c in cycles)


@pytest.mark.unit
def test_the_package_has_no_import_cycles():
    assert import_cycles(_modules()) == []


@pytest.mark.unit
def test_import_cycles_finds_a_loop(monkeypatch):
    # the check itself: give cells an import of paper (which imports cells), as a lazy import would
    assert import_cycles(["workbench.viz.cells", "workbench.viz.paper"]) == []
    graph_of = deps.direct_imports
    monkeypatch.setattr(deps, "direct_imports",
                        lambda m: graph_of(m) | ({"workbench.viz.paper"} if m == "workbench.viz.cells" else set()))
    assert import_cycles(["workbench.viz.cells", "workbench.viz.paper"]) == [["workbench.viz.cells", "workbench.viz.paper"]]


@pytest.mark.unit
def test_a_submodule_name_gives_the_submodule():
    import types

    import workbench.experiments.controlled as m
    import workbench.experiments.revisit as r

    assert isinstance(m, types.ModuleType) and m.ORACLE == "oracle"
    assert isinstance(r, types.ModuleType) and r.RANDOM_WEIGHTS.endswith("_weights")


@pytest.mark.unit
def test_no_module_over_about_300_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    biggest = sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
    assert max(sizes.values()) <= 340, biggest  # "~300": grid.py and training.py are cohesive at 325-338


LINTED = ("workbench", "tests", "scripts", "benchmarks")  # the folders `ruff check` is run on


def _code_lines(path: Path) -> list[str]:
    """A module's lines, or a notebook's code cells' lines (ruff reads both)."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        return [line for c in cells if c["cell_type"] == "code" for line in "".join(c["source"]).splitlines()]
    return path.read_text().splitlines()


@pytest.mark.unit
def test_no_line_is_longer_than_ruff_allows():
    """pyproject's ruff ``line-length``, with E501 selected so that ``ruff check`` enforces it, holds for every
    line of the linted folders: this test fails ``make test`` (and CI, which runs no ruff) on a longer line."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    limit = int(re.search(r"^line-length = (\d+)", pyproject, re.MULTILINE).group(1))
    assert re.search(r'^\[tool\.ruff\.lint\]\n(?:[^\[].*\n)*extend-select = \[[^\]]*"E501"', pyproject, re.MULTILINE)
    files = [p for folder in LINTED for p in sorted((ROOT / folder).rglob("*"))
             if p.suffix in (".py", ".ipynb") and not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]
    long = [f"{p.relative_to(ROOT)}: {len(line)} characters: {line.strip()[:60]}…"
            for p in files for line in _code_lines(p) if len(line) > limit]
    assert not long, f"lines over {limit} characters:\n" + "\n".join(long)


PLUGIN = '''
"""A user's own objective, outside the package: ascent on the answer NLL, scaled by `gain`."""
from dataclasses import dataclass, field
from typing import ClassVar

from workbench.likelihood import forward_logits, mean_nll
from workbench.objectives import Objective, register


@register
@dataclass
class ScaledAscent(Objective):
    name: ClassVar[str] = "scaled_ascent"
    default_lr: ClassVar[float] = 0.01
    loss_units: ClassVar[str] = "answer_tokens"
    gain: float = field(default=1.0, metadata={"help": "scale of the ascent"})

    def __call__(self, model, batch, ctx):
        return -self.gain * mean_nll(forward_logits(model, batch), batch["labels"])
'''


@pytest.mark.notebooks
def test_a_plugin_objective_runs_from_the_cli(tmp_path):
    plugin = tmp_path / "my_objective.py"
    plugin.write_text(textwrap.dedent(PLUGIN))
    outputs, cache = tmp_path / "outputs", tmp_path / "cache"
    cmd = [sys.executable, "-m", "workbench", "run", "oracle-vs-random", "-p", "params/oracle-vs-random/smoke.yaml",
           "-p", f"plugins=[{plugin.relative_to(tmp_path)}]", "-p", "objectives=[scaled_ascent,npo]",
           "-p", "localizers=[]", "-p", "scaled_ascent_gain=2.0", "-p", "lr_scaled_ascent=0.02",
           "--run-id", "plugin", "--outputs", str(outputs)]
    env = {**__import__("os").environ, "WORKBENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = pd.read_csv(outputs / "oracle-vs-random" / "plugin" / "summary.csv")
    assert set(summary["objective"]) == {"scaled_ascent", "npo"}
    assert set(summary[summary.objective == "scaled_ascent"]["scenario"]) == {"oracle", "random"}
    params = __import__("json").loads((outputs / "oracle-vs-random" / "plugin" / "params.json").read_text())
    assert params["params"]["plugins"] == [str(plugin)] and params["params"]["scaled_ascent_gain"] == 2.0
