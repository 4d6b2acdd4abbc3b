"""Tables and plots from a run's records; `python -m lth_jax.report WORKDIR`
redraws a finished run's plots from its files."""
from __future__ import annotations

import os
import sys

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str) -> None:
    from lth_jax.files import save_figure as write
    write(fig, path)


def plot_curves(records: list, path: str, title: str = "") -> None:
    """Loss and accuracy against step for train and every evaluated set."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [r["step"] for r in records]
    sets = [k[: -len("_loss")] for k in records[0] if k.endswith("_loss")]
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for s in sets:
            ax.plot(steps, [np.mean(np.asarray(r[f"{s}_{metric}"], np.float64)) for r in records], label=s)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[1].legend()
    fig.suptitle(title)
    save_figure(fig, path)


def format_table(rows: list, columns: list | None = None) -> str:
    columns = columns or list(rows[0])
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4f}"
        return str(v)
    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.rjust(w) for c, w in zip(columns, widths))
    body = ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join([line, "-" * len(line), *body])


def print_table(rows: list, title: str = "", columns: list | None = None) -> None:
    rows = [{k: (float(np.mean(v)) if isinstance(v, (float, np.floating, np.ndarray)) else v)
             for k, v in r.items()} for r in rows]
    if title:
        print(title)
    print(format_table(rows, columns))


def print_outputs(workdir: str, names: list) -> None:
    """The closing lines of a run: where its results are and how to redraw them."""
    print(f"results: {', '.join(os.path.join(workdir, n) for n in names)}")
    print(f"TensorBoard: tensorboard --logdir {os.path.join(workdir, 'tensorboard')}; "
          f"redraw the plots: python -m lth_jax.report {workdir}")


def redraw(workdir: str) -> list:
    """Redraw the plots of a run from its files; returns the written paths."""
    from lth_jax.errors import LthError
    from lth_jax.files import read_json, read_jsonl
    from lth_jax.workdir import RunDir, is_run
    rundir = RunDir(workdir)
    if not is_run(rundir.path):
        raise LthError(f"{workdir} is not a lth_jax workdir (no config.json)")
    config = read_json(rundir.file("config.json"))
    experiment = config.get("experiment", "train")
    if experiment != "train" and not rundir.finished:
        raise LthError(f"{workdir} holds an unfinished {experiment} run (no summary.json); finish it by running "
                       "the same main.py command again, then redraw")
    if experiment == "train":
        records = read_jsonl(rundir.file("metrics.jsonl"))
        if not records:
            raise LthError(f"{workdir} has no evaluations in metrics.jsonl yet; nothing to draw")
        path = rundir.file("plots", "curves.png")
        plot_curves(records, path, title=f"{config['model']['name']} on {config['data']['name']}")
        return [path]
    from lth_jax import experiments
    return experiments.get(experiment).redraw(rundir, config)


def main(argv=None) -> int:
    from lth_jax.errors import LthError
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
