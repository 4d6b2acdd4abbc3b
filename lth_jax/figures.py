"""Tables and plots from a run's records (what every experiment prints and draws)."""
from __future__ import annotations

import os

import numpy as np

from lth_jax import files


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str) -> None:
    files.save_figure(fig, path)


def plot_curves(records: list, path: str, title: str = "") -> None:
    """Loss and accuracy against step for train and every evaluated set."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [r["step"] for r in records]
    sets = [k[: -len("_loss")] for k in records[0] if k.endswith("_loss")]
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for s in (s for s in sets if f"{s}_{metric}" in records[0]):
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


def band(ax, x, stats: list, scale: float, color, marker, label) -> None:
    """A mean line with a ±std band from [{"mean", "std"}, ...] (times `scale`; no band where std is None)."""
    mean = np.array([st["mean"] for st in stats]) * scale
    std = np.array([st["std"] or 0.0 for st in stats]) * scale
    ax.plot(x, mean, color=color, marker=marker, label=label, ms=4)
    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2)


def table(title: str, rows: list, columns: list | None = None) -> dict:
    """A table a run reports: printed at its end (`print_tables`) and by ``python -m lth_jax.report
    WORKDIR --markdown`` (`markdown_tables`), so both show the same numbers under the same heading."""
    return {"title": title, "rows": rows, "columns": columns or list(dict.fromkeys(c for r in rows for c in r))}


def print_tables(tables: list) -> None:
    for t in tables:
        if t["rows"]:
            print(t["title"])
            print(format_table(t["rows"], t["columns"]))


def markdown_tables(tables: list) -> str:
    out = []
    for t in tables:
        if not t["rows"]:
            continue
        cells = [[str(r.get(c, "")) for c in t["columns"]] for r in t["rows"]]
        out += [t["title"], "", "| " + " | ".join(t["columns"]) + " |",
                "|" + "|".join("---" for _ in t["columns"]) + "|", *("| " + " | ".join(row) + " |" for row in cells), ""]
    return "\n".join(out)


def remaining_axis(ax, summary, label):
    """A log x axis of % weights remaining (high to low) over summary["levels"]' densities."""
    from matplotlib.ticker import FixedLocator, NullFormatter
    ax.set_xscale("log")
    ticks = [t for t in (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1)
             if t >= 0.8 * 100 * min(e["density"] for e in summary["levels"])]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.invert_xaxis()
    ax.set_xlabel("% of weights remaining")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3, which="both")
