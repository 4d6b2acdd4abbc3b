"""`python -m lth_jax.report WORKDIR`: redraw a finished run's (or sweep's) plots from its files."""
from __future__ import annotations

import sys

from lth_jax import experiments, figures
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


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m lth_jax.report WORKDIR", file=sys.stderr)
        return 2
    try:
        paths = redraw(argv[0])
    except LthError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
