"""`python -m lth_jax.report WORKDIR [--markdown]`: redraw a finished run's (or
sweep's) plots from its files; with ``--markdown``, print its tables instead,
under the command and the commit that made them (what docs/results.md holds)."""
from __future__ import annotations

import argparse
import sys

from lth_jax import experiments, figures, provenance
from lth_jax.errors import LthError
from lth_jax.files import read_json, read_jsonl
from lth_jax.workdir import RunDir, is_run


def redraw(workdir: str) -> list:
    """Redraw the plots of a run from its files; returns the written paths."""
    rundir = RunDir(workdir)
    if not is_run(rundir.path):
        raise LthError(f"{workdir} is not a lth_jax workdir (no config.json)")
    config = read_json(rundir.file("config.json"))
    experiment = config.get("experiment", "train")
    if experiment == "sweep":
        if not rundir.finished:
            raise LthError(f"{workdir} holds an unfinished sweep (no summary.json); finish it by running the same "
                           "python -m lth_jax.sweep command again, then redraw")
        from lth_jax import sweep
        return sweep.redraw(rundir, config)
    if experiment != "train" and not rundir.finished:
        raise LthError(f"{workdir} holds an unfinished {experiment} run (no summary.json); finish it by running "
                       "the same main.py command again, then redraw")
    if experiment == "train":
        records = read_jsonl(rundir.file("metrics.jsonl"))
        if not records:
            raise LthError(f"{workdir} has no evaluations in metrics.jsonl yet; nothing to draw")
        path = rundir.file("plots", "curves.png")
        figures.plot_curves(records, path, title=f"{config['model']['name']} on {config['data']['name']}")
        return [path]
    return experiments.get(experiment).redraw(rundir, config)


def _finished(workdir: str):
    rundir = RunDir(workdir)
    if not is_run(rundir.path):
        raise LthError(f"{workdir} is not a lth_jax workdir (no config.json)")
    config = read_json(rundir.file("config.json"))
    if not rundir.finished:
        raise LthError(f"{workdir} holds an unfinished run (no summary.json); finish it by running the same "
                       "command again")
    return rundir, config, read_json(rundir.file("summary.json"))


def tables(workdir: str) -> list:
    """The tables of a finished run or sweep, as `figures.table`s."""
    rundir, config, summary = _finished(workdir)
    experiment = config.get("experiment", "train")
    if experiment == "sweep":
        from lth_jax import sweep
        return sweep.tables(summary)
    if experiment == "train":
        final = {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in summary["final"].items()}
        return [figures.table("The last evaluation", [final])]
    return experiments.get(experiment).tables(summary, rundir)


def markdown(workdir: str, only: list | None = None, header: bool = True) -> str:
    """The command, the provenance line and every table (or the tables numbered `only`, from 1) of a
    finished run, as markdown."""
    rundir, config, summary = _finished(workdir)
    found = tables(workdir)
    if only:
        bad = [i for i in only if not 1 <= i <= len(found)]
        if bad:
            raise LthError(f"{workdir} has {len(found)} tables; no table {bad[0]}")
        found = [found[i - 1] for i in only]
    if not header:
        return figures.markdown_tables(found)
    prov = summary.get("provenance")
    command = (prov or {}).get("command") or f"(not started from the command line; workdir {workdir})"
    wall = summary.get("wall_seconds")
    lines = [f"    {command}", "", provenance.describe(prov) + (f"; {wall:.0f} s" if wall is not None else "") + ".", ""]
    return "\n".join(lines) + figures.markdown_tables(found)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m lth_jax.report", description=__doc__.splitlines()[0])
    parser.add_argument("workdir")
    parser.add_argument("--markdown", action="store_true", help="print the run's tables as markdown, with the "
                        "command and commit that made them, instead of redrawing the plots")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return 2 if e.code else 0
    try:
        if args.markdown:
            print(markdown(args.workdir))
            return 0
        paths = redraw(args.workdir)
    except LthError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
