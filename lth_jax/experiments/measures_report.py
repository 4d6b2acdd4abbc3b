"""Kendall tau, the granulated tau Psi, the label-noise table and the plots of a measures run."""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import kendalltau

from lth_jax.figures import format_table, pyplot, save_figure

AXES = ("architecture", "learning_rate", "weight_decay", "diet_fraction", "lottery_level")


def _members(results: list) -> list:
    return [m for res in results for m in res["members"].values()]


def _tau(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 2 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return None
    return float(kendalltau(a[ok], b[ok])[0])  # tau-b (ties counted as in scipy)


def granulated(members: list, measure: str) -> dict:
    """{axis: mean tau over the sets of members that differ only in that axis} for
    the axes with more than one value, and "psi": their mean (Jiang et al.'s Psi)."""
    out = {}
    for axis in AXES:
        if len({m.get(axis) for m in members}) < 2:
            continue
        others = [a for a in (*AXES, "seed") if a != axis]
        sets = {}
        for m in members:
            sets.setdefault(tuple(m.get(a) for a in others), []).append(m)
        taus = [t for s in sets.values() if len(s) >= 2
                for t in [_tau([m["measures"][measure] for m in s], [m["gap"] for m in s])] if t is not None]
        out[axis] = float(np.mean(taus)) if taus else None
    valid = [v for v in out.values() if v is not None]
    out["psi"] = float(np.mean(valid)) if valid else None
    return out


def summarize(results: list, architectures: list, seconds: float) -> dict:
    members = _members(results)
    clean = [m for m in members if m["label_noise"] == 0]
    names = list(clean[0]["measures"])
    ranking = {}
    for name in names:
        ranking[name] = {"tau": _tau([m["measures"][name] for m in clean], [m["gap"] for m in clean]),
                         **granulated(clean, name)}
    noise = {}
    for level in sorted({m["label_noise"] for m in members}):
        group = [m for m in members if m["label_noise"] == level]
        noise[f"{level:g}"] = {
            "members": len(group), "test_error": float(np.mean([1 - m["test_accuracy"] for m in group])),
            "train_accuracy": float(np.mean([m["train_accuracy"] for m in group])),
            "reached_stop_loss": int(sum(m["reached_stop_loss"] for m in group)),
            "measures": {n: float(np.mean([m["measures"][n] for m in group])) for n in names}}
    return {"experiment": "measures", "architectures": architectures, "members": len(members),
            "clean_members": len(clean), "gap": {"mean": float(np.mean([m["gap"] for m in clean])),
                                                 "min": float(np.min([m["gap"] for m in clean])),
                                                 "max": float(np.max([m["gap"] for m in clean]))},
            "ranking": ranking, "label_noise": noise, "wall_seconds": seconds}


def _f(v, digits=3):
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:+.{digits}f}"


def table_rows(summary: dict) -> list:
    rows = []
    order = sorted(summary["ranking"].items(), key=lambda kv: -(kv[1]["tau"] if kv[1]["tau"] is not None else -9))
    for name, r in order:
        row = {"measure": name, "tau": _f(r["tau"]), "Psi": _f(r.get("psi"))}
        for axis in AXES:
            if axis in r:
                row[f"tau | {axis}"] = _f(r[axis])
        rows.append(row)
    return rows


def noise_rows(summary: dict) -> list:
    levels = summary["label_noise"]
    rows = [{"": "test error", **{f"noise {k}": f"{100 * v['test_error']:.2f}%" for k, v in levels.items()}},
            {"": "train accuracy", **{f"noise {k}": f"{100 * v['train_accuracy']:.2f}%" for k, v in levels.items()}}]
    for name in summary["ranking"]:
        rows.append({"": name, **{f"noise {k}": f"{v['measures'][name]:.4g}" for k, v in levels.items()}})
    return rows


def print_summary(summary: dict) -> None:
    g = summary["gap"]
    print(f"{summary['clean_members']} clean members; generalization gap (train - test accuracy) "
          f"{100 * g['mean']:.2f}% on average ({100 * g['min']:.2f} to {100 * g['max']:.2f})")
    print("Kendall tau of each measure with the gap; Psi = mean over hyperparameters of the tau when only "
          "that one varies")
    rows = table_rows(summary)
    print(format_table(rows, list(dict.fromkeys(c for r in rows for c in r))))
    if len(summary["label_noise"]) > 1:
        print("mean measure values, clean vs noisy labels (a measure that follows test error must move with it)")
        rows = noise_rows(summary)
        print(format_table(rows, list(rows[0])))


def _grid(plt, n):
    cols = min(6, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()


def draw(rundir, summary: dict, results: list) -> list:
    plt = pyplot()
    members = _members(results)
    clean = [m for m in members if m["label_noise"] == 0]
    names = list(summary["ranking"])
    lrs = np.log10([m["learning_rate"] for m in clean])
    fig, axes = _grid(plt, len(names))
    for ax, name in zip(axes, names):
        ax.scatter([m["measures"][name] for m in clean], [100 * m["gap"] for m in clean], c=lrs, s=9, cmap="viridis")
        ax.set_title(f"{name}\ntau {_f(summary['ranking'][name]['tau'], 2)}", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.supylabel("generalization gap (points)")
    fig.suptitle("each measure vs the gap over the clean grid (colour: log10 learning rate)")
    paths = [rundir.file("plots", "measures.png")]
    save_figure(fig, paths[0])
    if len(summary["label_noise"]) > 1:
        fig, axes = _grid(plt, len(names))
        levels = sorted({m["label_noise"] for m in members})
        for ax, name in zip(axes, names):
            for level, color in zip(levels, ("tab:blue", "tab:red", "tab:orange", "tab:purple")):
                group = [m for m in members if m["label_noise"] == level]
                ax.scatter([m["measures"][name] for m in group], [100 * (1 - m["test_accuracy"]) for m in group],
                           s=9, color=color, label=f"noise {level:g}")
            ax.set_title(name, fontsize=7)
            ax.tick_params(labelsize=6)
        axes[0].legend(fontsize=6)
        fig.supylabel("test error (%)")
        fig.suptitle("each measure vs test error, clean vs noisy labels")
        paths.append(rundir.file("plots", "label_noise.png"))
        save_figure(fig, paths[1])
    return paths
