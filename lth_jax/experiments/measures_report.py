"""Kendall tau, the granulated tau Psi, the label-noise table and the plots of a measures run.

Conventions, as Jiang et al. 2020 define them (their eqs. 3 and 4) and as
the pair loss of the reference code scores a pair (``sign_error`` in
``experiments/coupled_networks/common.py`` of
nitarshan/robust-generalization-measures; that repository has no tau of
its own):

- **tau** is the mean over ordered pairs of members of ``sign(measure_i -
  measure_j) * sign(gap_i - gap_j)`` (Kendall's tau-a): a tie in the measure
  or in the gap scores 0, so a measure that is constant over a set has tau 0
  (not "undefined"), and such a set counts in Psi.
- **Psi** averages, over the axes with more than one value, psi = the mean
  tau over the sets of members that differ in that axis only.
- **Only members that reached the stopping loss are ranked** (the reference's
  ``load_data`` discards the others): members that did not are kept out of
  tau, Psi and the label-noise means and listed under ``not_converged``. A
  set left with fewer than 2 members has no pair and is skipped; members
  where a measure is not finite (a margin-normalised measure of a network
  whose 10th-percentile margin is <= 0, see `lth_jax.measures`) are left out
  of that measure's tau and listed under ``margin_not_positive``.
"""
from __future__ import annotations

import math

import numpy as np

from lth_jax.figures import print_tables, pyplot, save_figure, table
from lth_jax.stats import paired, pm_diff

AXES = ("architecture", "learning_rate", "weight_decay", "diet_fraction", "lottery_level")


def _members(results: list) -> list:
    """Every member, with "id" = its group's folder / its name, and its measures
    as numbers (an undefined one, null in a result.json read back, as NaN)."""
    return [{**m, "id": f"{m['group']}/{name}" if "group" in m else name,
             "measures": {k: math.nan if v is None else v for k, v in m["measures"].items()}}
            for res in results for name, m in res["members"].items()]


def kendall_tau(measure, gap):
    """Jiang et al.'s tau (tau-a; ties score 0) of the members where both values
    are finite; None if fewer than 2 are."""
    a, b = np.asarray(measure, np.float64), np.asarray(gap, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b, n = a[ok], b[ok], int(ok.sum())
    if n < 2:
        return None
    return float(np.sum(np.sign(a[:, None] - a[None, :]) * np.sign(b[:, None] - b[None, :])) / (n * (n - 1)))


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
        taus = [t for s in sets.values()
                for t in [kendall_tau([m["measures"][measure] for m in s], [m["gap"] for m in s])] if t is not None]
        out[axis] = float(np.mean(taus)) if taus else None
    valid = [v for v in out.values() if v is not None]
    out["psi"] = float(np.mean(valid)) if valid else None
    return out


def _positive(v) -> bool:
    return v is not None and v > 0


def _mean(values):
    return float(np.mean(values)) if len(values) else None


def summarize(results: list, architectures: list, seconds: float) -> dict:
    members = _members(results)
    clean = [m for m in members if m["label_noise"] == 0]
    ranked = [m for m in clean if m["reached_stop_loss"]]
    names = list(clean[0]["measures"])
    ranking = {}
    for name in names:
        ranking[name] = {"tau": kendall_tau([m["measures"][name] for m in ranked], [m["gap"] for m in ranked]),
                         **granulated(ranked, name)}
    noise = {}
    for level in sorted({m["label_noise"] for m in members}):
        group = [m for m in members if m["label_noise"] == level and m["reached_stop_loss"]]
        noise[f"{level:g}"] = {
            "members": sum(m["label_noise"] == level for m in members), "reached_stop_loss": len(group),
            "test_error": _mean([1 - m["test_accuracy"] for m in group]),
            "train_accuracy": _mean([m["train_accuracy"] for m in group]),
            "measures": {n: _mean([m["measures"][n] for m in group]) for n in names}}
    for level in noise:
        if level != "0":  # noisy minus clean, paired by grid point (both reached the stopping loss)
            noise[level]["minus_clean"] = {n: paired(_by_point(members, float(level), n), _by_point(members, 0.0, n))
                                           for n in ["test_error", *names]}
    gaps = [m["gap"] for m in ranked]
    return {"experiment": "measures", "architectures": architectures, "members": len(members),
            "clean_members": len(clean), "ranked_members": len(ranked),
            "gap": {"mean": _mean(gaps), "min": min(gaps, default=None), "max": max(gaps, default=None)},
            "ranking": ranking, "label_noise": noise,
            "not_converged": [{k: m[k] for k in ("id", "label_noise", "stop_step", "train_loss", "train_accuracy")}
                              for m in members if not m["reached_stop_loss"]],
            "margin_not_positive": [m["id"] for m in members if not _positive(m["raw"]["margin"])],
            "wall_seconds": seconds}


def _by_point(members: list, level: float, name: str) -> dict:
    """{grid point: value} of the members at a label-noise level that reached the stopping loss."""
    key = ("architecture", "learning_rate", "weight_decay", "seed", "diet_fraction", "lottery_level")
    out = {}
    for m in members:
        if m["label_noise"] == level and m["reached_stop_loss"]:
            value = 1 - m["test_accuracy"] if name == "test_error" else m["measures"][name]
            if value is not None and math.isfinite(value):
                out[repr(tuple(m.get(k) for k in key))] = value
    return out


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


def _pct(v):
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.2f}%"


def noise_rows(summary: dict) -> list:
    """Means over the members of each noise level that reached the stopping loss, and each noisy level
    minus the clean one, paired by grid point."""
    levels = summary["label_noise"]
    noisy = [k for k in levels if "minus_clean" in levels[k]]

    def diff(k, name, scale):
        d = levels[k]["minus_clean"][name]
        return "n/a" if not d["n"] else pm_diff(d, scale=scale, digits=2 if scale == 100 else 4)
    rows = [{"": "reached the stopping loss", **{f"noise {k}": f"{v['reached_stop_loss']} of {v['members']}"
                                                 for k, v in levels.items()}},
            {"": "test error", **{f"noise {k}": _pct(v["test_error"]) for k, v in levels.items()},
             **{f"noise {k} - clean": diff(k, "test_error", 100) for k in noisy}},
            {"": "train accuracy", **{f"noise {k}": _pct(v["train_accuracy"]) for k, v in levels.items()}}]
    for name in summary["ranking"]:
        rows.append({"": name, **{f"noise {k}": "n/a" if v["measures"][name] is None or not math.isfinite(
            v["measures"][name]) else f"{v['measures'][name]:.4g}" for k, v in levels.items()},
            **{f"noise {k} - clean": diff(k, name, 1) for k in noisy}})
    return rows


def tables(summary: dict, rundir=None) -> list:
    g = summary["gap"]
    ranked = (f"{summary['ranked_members']} of {summary['clean_members']} clean members reached the stopping loss and "
              "are ranked" + ("" if g["mean"] is None else
                              f"; their generalization gap (train - test accuracy) is {100 * g['mean']:.2f} points "
                              f"on average ({100 * g['min']:.2f} to {100 * g['max']:.2f})"))
    out = []
    if summary["not_converged"]:
        rows = [{"member": m["id"], "label noise": f"{m['label_noise']:g}", "steps": m["stop_step"],
                 "train loss": f"{m['train_loss']:.4f}", "train accuracy": _pct(m["train_accuracy"])}
                for m in summary["not_converged"]]
        out.append(table(f"{len(rows)} members did not reach the stopping loss (kept out of tau, Psi and the noise "
                         "table's means)", rows))
    margin = summary["margin_not_positive"]
    out.append(table(f"Kendall tau (Jiang et al.'s, ties score 0) of each measure with the gap; Psi = mean over the "
                     f"hyperparameters of the tau when only that one varies. {ranked}." +
                     (f" 10th-percentile margin <= 0, margin-normalised measures undefined: {', '.join(margin)}."
                      if margin else ""), table_rows(summary)))
    if len(summary["label_noise"]) > 1:
        out.append(table("Mean measure values by share of flipped training labels (members that reached the "
                         "stopping loss), and noisy minus clean paired by grid point (architecture, learning rate, "
                         "weight decay, seed): mean ± sample std, n, two-sided paired t-test p; test error in "
                         "points", noise_rows(summary)))
    return out


def print_summary(summary: dict) -> None:
    print_tables(tables(summary))


def _grid(plt, n):
    cols = min(6, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()


def draw(rundir, summary: dict, results: list) -> list:
    plt = pyplot()
    everyone = _members(results)
    members = [m for m in everyone if m["reached_stop_loss"]]  # the ranked ones
    clean = [m for m in members if m["label_noise"] == 0]
    names = list(summary["ranking"])
    lrs = np.log10([m["learning_rate"] for m in clean])
    fig, axes = _grid(plt, len(names))
    for ax, name in zip(axes, names):
        ax.scatter([m["measures"][name] for m in clean], [100 * m["gap"] for m in clean], c=lrs, s=9, cmap="viridis")
        ax.set_title(f"{name}\ntau {_f(summary['ranking'][name]['tau'], 2)}", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.supylabel("generalization gap (points)")
    fig.suptitle("each measure vs the gap over the clean members that reached the stopping loss "
                 "(colour: log10 learning rate)")
    paths = [rundir.file("plots", "measures.png")]
    save_figure(fig, paths[0])
    if len(summary["label_noise"]) > 1:
        fig, axes = _grid(plt, len(names))
        levels = sorted({m["label_noise"] for m in everyone})  # in the legend even with no member drawn
        for ax, name in zip(axes, names):
            for level, color in zip(levels, ("tab:blue", "tab:red", "tab:orange", "tab:purple")):
                group = [m for m in members if m["label_noise"] == level]
                ax.scatter([m["measures"][name] for m in group], [100 * (1 - m["test_accuracy"]) for m in group],
                           s=9, color=color, label=f"noise {level:g}")
            ax.set_title(name, fontsize=7)
            ax.tick_params(labelsize=6)
        axes[0].legend(fontsize=6)
        fig.supylabel("test error (%)")
        fig.suptitle("each measure vs test error, clean vs noisy labels (members that reached the stopping loss)")
        paths.append(rundir.file("plots", "label_noise.png"))
        save_figure(fig, paths[1])
    return paths
