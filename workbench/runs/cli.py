"""Command line: run a notebook, a grid of notebooks, the demo, or list what exists.

::

    python -m workbench run <notebook> -p params/<notebook>/<file>.yaml [-p key=value …] [--run-id X] [--force]
    python -m workbench evaluate --before <model> --after <unlearned> [--after …] [--retain-model <θr>] [-p key=value …]
    python -m workbench grid <grid.yaml> [--jobs N] [--executor local] [--force]
    python -m workbench export <run folder> --objective O --scenario S --seed N [--alpha A] --out DIR [--force]
    python -m workbench export <run folder> --model theta_o --seed N | --model theta_r | theta_p | theta_full --out DIR
    python -m workbench gather <out folder> <run folder> <run folder> [...] [--allow KEY] [--force]
    python -m workbench demo [--jobs N]
    python -m workbench list
    python -m workbench status [notebook …]

``-p`` takes parameter files and ``key=value`` overrides, merged left to right; values are YAML
scalars or flow lists (``-p objectives=[npo,wga] -p lr_npo=1e-4``). Parameters are validated
before anything runs (exit status 2); a failing cell exits with status 1 and names the notebook,
the cell and the executed notebook. See :mod:`workbench.runs.grid` for how runs are executed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from workbench.runs import config, grid
from workbench.runs import rundir as runs
from workbench.runs.cache import VERIFY_ENV

DEMO_NOTEBOOKS = ["revisit-localizers", "oracle-vs-random", "l2-mlp-supervision", "lume"]
EVALUATE_NOTEBOOK = "evaluate-checkpoints"
EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workbench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute one notebook with papermill")
    run.add_argument("notebook", help="notebook name (notebooks/<name>.ipynb) or path")
    run.add_argument("-p", "--params", action="append", default=[], metavar="FILE|KEY=VALUE")
    run.add_argument("--run-id", default="", help="run folder name (default: the run_id parameter, else automatic)")
    _common(run)
    ev = sub.add_parser("evaluate", help="the paper's evaluation of your checkpoints (notebooks/evaluate-checkpoints.ipynb)")
    ev.add_argument("--before", required=True, help="the model before unlearning: hub id or local folder")
    ev.add_argument("--after", required=True, action="append", metavar="CHECKPOINT",
                    help="an unlearned checkpoint (hub id, folder or PEFT adapter folder); repeat for one curve each")
    ev.add_argument("--label", action="append", default=[], help="a name per --after (its method), in order")
    ev.add_argument("--retain-model", default="", help="θr, trained without the forget set (Forget Quality's reference)")
    ev.add_argument("-p", "--params", action="append", default=[], metavar="FILE|KEY=VALUE")
    ev.add_argument("--run-id", default="", help="run folder name (default: automatic)")
    _common(ev)
    _export_parser(sub)
    ga = sub.add_parser("gather", help="finished runs (or kept references) of one notebook as one result: tables, "
                        "Random–Random baseline and label test over all of them, from their tables alone")
    ga.add_argument("out", help="the folder to write (e.g. outputs/reference/<campaign>/<notebook>)")
    ga.add_argument("runs", nargs="+", help="run folders outputs/<notebook>/<run-id>/ or kept references")
    ga.add_argument("--allow", action="append", default=[], metavar="KEY",
                    help="a parameter that may differ between the runs besides seeds, objectives and localizers")
    ga.add_argument("--force", action="store_true", help="write into a non-empty out folder")
    ga.add_argument("--title", help="the figures' title (default: the notebook's name)")
    g = sub.add_parser("grid", help="execute every combination of a grid file's axes")
    g.add_argument("grid_file")
    g.add_argument("--jobs", type=int, default=2)
    g.add_argument("--executor", default="local", help=f"one of {sorted(grid.EXECUTORS)}")
    _common(g)
    demo = sub.add_parser("demo", help="run the four notebooks with params/<notebook>/default.yaml")
    demo.add_argument("--jobs", type=int, default=1)
    _common(demo)
    sub.add_parser("list", help="notebooks and their parameter files")
    st = sub.add_parser("status", help="the runs under outputs/: state, step, and the parameters that tell them apart")
    st.add_argument("notebook", nargs="*", help="only these notebooks' runs (default: all)")
    _outputs_arg(st)
    return parser


EXPORT_HELP = """Write a model a finished run computed as a Hugging Face folder (config.json, tokenizer with its
chat template if it has one, model.safetensors) that transformers, `python -m workbench evaluate` and
open-unlearning load. The model comes from the cache ($WORKBENCH_CACHE or <repo>/.cache); where the
cache lacks it, it is recomputed from the run's params.json (a message says so; progress bars show it).

Models: an unlearned one — --objective, --scenario and --seed name one sweep of the run (its
per_alpha table; `summary.csv` lists them), --alpha picks θ(α) on it (1: unlearned, 0: its start);
theta_o (--seed: a target seed; the controlled notebooks); theta_r; theta_p; theta_full
(revisit-localizers). A refusal lists what the run has."""


def _export_parser(sub) -> None:
    ex = sub.add_parser("export", help="write a model a run computed (θp, θr, θ_full, θo, unlearned at α) as a "
                        "Hugging Face folder", description=EXPORT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    ex.add_argument("run", help="the run folder, outputs/<notebook>/<run-id>/")
    ex.add_argument("--model", default=None, choices=["theta_p", "theta_r", "theta_full", "theta_o", "unlearned"],
                    help="which model (default: unlearned when --objective is given)")
    ex.add_argument("--objective", default=None, help="unlearned: the objective of the sweep")
    ex.add_argument("--scenario", default=None, help="unlearned: its scenario (oracle, random, a localizer)")
    ex.add_argument("--seed", type=int, default=None, help="unlearned: its region seed; theta_o: the target seed")
    ex.add_argument("--alpha", type=float, default=1.0, help="unlearned: mixing coefficient α in [0, 1] (default 1)")
    ex.add_argument("--out", required=True, help="the folder to write (must not exist or be empty)")
    ex.add_argument("--force", action="store_true", help="replace a non-empty --out (a folder of files only)")
    ex.add_argument("--cache", default=None, help="cache root (default $WORKBENCH_CACHE or <repo>/.cache)")


def cmd_export(args: argparse.Namespace) -> int:
    from workbench.experiments.export import export_model

    export_model(args.run, args.out, model=args.model, objective=args.objective, scenario=args.scenario,
                 seed=args.seed, alpha=args.alpha, force=args.force, cache_root=args.cache)
    print(args.out)
    return 0


def _outputs_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--outputs", default=None, help="outputs root (default $WORKBENCH_OUTPUTS or <repo>/outputs)")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="replace complete runs with the same id")
    _outputs_arg(parser)
    parser.add_argument("--verify", action="store_true",
                        help="hash every file of every cache hit (default: size and mtime; full hashes at build time)")


def cmd_run(args: argparse.Namespace) -> int:
    name, path = grid.resolve_notebook(args.notebook)
    return _run(name, path, _params_or_defaults(name, args.params), args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    name, path = grid.resolve_notebook(EVALUATE_NOTEBOOK)
    params = _params_or_defaults(name, args.params)
    params |= {"before": args.before, "after": args.after, **({"labels": args.label} if args.label else {}),
               **({"retain_model": args.retain_model} if args.retain_model else {})}
    return _run(name, path, params, args)


def _is_file(entry: str) -> bool:  # as merge_params reads it
    return "=" not in entry or entry.endswith((".yaml", ".yml"))


def default_params(name: str) -> Path:
    """``params/<name>/default.yaml``: what ``make demo``, a bare ``run`` and *Run All* execute."""
    return runs.repo_root() / "params" / name / "default.yaml"


def _params_or_defaults(name: str, entries: Sequence[str]) -> dict:
    """``-p`` entries merged in order; with no parameter file among them they override
    ``params/<name>/default.yaml`` (the values ``make demo`` runs), not the config's bare defaults."""
    default = default_params(name)
    if any(_is_file(p) for p in entries) or not default.is_file():
        return grid.merge_params(entries, Path.cwd())
    print(f"parameters: {default.relative_to(runs.repo_root())} (no -p file given)", file=sys.stderr)
    return grid.merge_params([str(default)], runs.repo_root()) | grid.merge_params(entries, Path.cwd())


def _run(name: str, path: Path, params: dict, args: argparse.Namespace) -> int:
    resolved = grid.validate(name, path, params)
    run_id = args.run_id or params.get("run_id") or runs.new_run_id()
    declared = grid.notebook_parameters(path)
    spec = grid.RunSpec(name, str(path), resolved, run_id, str(runs.outputs_root(args.outputs)), force=args.force,
                        threads=int(os.environ.get("OMP_NUM_THREADS", "1")), progress=True,
                        pass_run_id="run_id" in declared)
    if not args.force and runs.RunDir(spec.run_dir).is_complete():
        raise runs.RunExistsError(f"{spec.run_dir} holds a complete run; use --force or another --run-id")
    print(f"running {name} → {spec.run_dir}", file=sys.stderr)
    result = grid.execute(spec)
    if result.state == "skipped" and result.error:  # another process holds the same run
        print(f"error: {spec.run_dir}: {result.error}; wait for it or pass another --run-id", file=sys.stderr)
        return EXIT_FAILED
    if result.state == "failed":
        print(grid.failure_message(spec, result), file=sys.stderr)
        return EXIT_FAILED
    print(spec.run_dir)
    return 0


def cmd_gather(args: argparse.Namespace) -> int:
    from workbench.viz.gather import gather

    print(gather(args.runs, args.out, allow=args.allow, force=args.force, title=args.title))
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    if args.executor not in grid.EXECUTORS:
        raise config.ConfigError("grid", [f"unknown executor {args.executor!r}; allowed: {sorted(grid.EXECUTORS)}"])
    spec = grid.Grid.from_file(args.grid_file)
    outputs = str(runs.outputs_root(args.outputs))
    table = grid.run_grid(spec, outputs=outputs, jobs=args.jobs, executor=args.executor, force=args.force,
                          progress=_grid_progress())
    folder = grid.grid_folder(spec, outputs)
    counts = table["state"].value_counts().to_dict()
    print(f"grid {spec.name}: {counts}; tables in {folder}")
    for row in table[table["state"] == "failed"].itertuples():
        print(f"  failed {row.run_id} (cell {row.cell}): {row.error}", file=sys.stderr)
    return EXIT_FAILED if counts.get("failed") else 0


def _grid_progress():
    from tqdm.auto import tqdm

    bar = tqdm(desc="runs", unit="run")

    def update(result: grid.RunResult | int) -> None:
        if isinstance(result, int):
            bar.reset(total=result)
            return
        bar.update(1)
        bar.set_postfix_str(f"{result.run_id}: {result.state}")

    return update


def cmd_demo(args: argparse.Namespace) -> int:
    outputs = str(runs.outputs_root(args.outputs))
    specs = [_demo_spec(nb, outputs, args) for nb in DEMO_NOTEBOOKS]
    failed = 0
    for result in grid.EXECUTORS["local"](specs, args.jobs):
        ok = result.state == "complete"
        failed += not ok
        print(f"{'done  ' if ok else 'FAILED'} {result.run_dir}" + ("" if ok else f"  ({result.error})"))
    return EXIT_FAILED if failed else 0


def _demo_spec(notebook: str, outputs: str, args: argparse.Namespace) -> grid.RunSpec:
    name, path = grid.resolve_notebook(notebook)
    resolved = grid.validate(name, path, grid.merge_params([str(default_params(name))]))
    return grid.RunSpec(name, str(path), resolved, runs.new_run_id(), outputs, force=args.force,
                        threads=grid.threads_per_job(args.jobs))


def cmd_list(args: argparse.Namespace) -> int:
    params_root = runs.repo_root() / "params"
    for path in sorted(grid.notebooks_dir().glob("*.ipynb")):
        files = sorted(p.name for p in (params_root / path.stem).glob("*.yaml"))
        print(f"{path.stem}\n  notebook: {path}\n  params:   {', '.join(files) or '(none)'}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from workbench.runs import listing

    print(listing.describe(listing.run_states(args.outputs, args.notebook or None)))
    return 0


COMMANDS = {"run": cmd_run, "evaluate": cmd_evaluate, "export": cmd_export, "gather": cmd_gather, "grid": cmd_grid,
            "demo": cmd_demo, "list": cmd_list, "status": cmd_status}
# Errors the user can fix by changing the command line: reported in one message, no traceback.
USER_ERRORS = (config.ConfigError, runs.RunExistsError, FileNotFoundError, ValueError)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "verify", False):
        os.environ[VERIFY_ENV] = "1"  # the notebook kernels inherit it
    # papermill streams the kernel's stderr (progress bars, stage names) through its logger
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("papermill").setLevel(logging.INFO)
    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:  # Ctrl-C: the workers and kernels end with the grid; say what is kept
        print("\ninterrupted: complete runs and every finished cache entry (models, unlearning runs, sweeps) "
              "are kept; the same command resumes from them", file=sys.stderr)
        return EXIT_INTERRUPTED
