"""Per-level results, the summary, the table and the plots of a lottery run."""
from __future__ import annotations

import os

import numpy as np

from lth_jax import ensemble
from lth_jax import masks as masks_lib
from lth_jax.figures import band, print_tables, pyplot, remaining_axis, save_figure, table
from lth_jax.stats import paired, pm, pm_diff, spread
from lth_jax.workdir import read_json

METRICS = ("final_test_accuracy", "final_test_loss", "best_test_accuracy", "min_val_loss",
           "early_stop_step", "early_stop_test_accuracy", "density", "density_all",
           "final_dead_dynamic", "final_dead_static",  # the dead-neuron rates with train.log_activations
           "unit_density")  # with lottery.granularity = "units": the share of hidden units alive
KIND_STYLE = {"dense": ("black", "o"), "ticket": ("tab:blue", "o"), "reinit": ("tab:orange", "s"),
              "random_prune": ("tab:green", "^"), "shuffle": ("tab:purple", "v")}
CONTROLS = ("reinit", "random_prune", "shuffle")


def level_result(level: int, names: list, records: list, stacked_mask) -> dict:
    """One entry per member: final and best metrics and the early-stopping iteration."""
    steps = np.array([r["step"] for r in records])
    curves = {k: np.array([np.asarray(r[k], dtype=np.float64) for r in records])
              for k in records[0] if k not in ("step", "level", "tag")}
    members = {}
    for i, name in enumerate(names):
        d = masks_lib.densities(ensemble.take(stacked_mask, i))
        best = int(np.argmin(curves["val_loss"][:, i]))  # first minimum: the early-stopping iteration
        members[name] = {
            "final_test_accuracy": curves["test_accuracy"][-1, i], "final_test_loss": curves["test_loss"][-1, i],
            "final_val_accuracy": curves["val_accuracy"][-1, i], "best_test_accuracy": curves["test_accuracy"][:, i].max(),
            "min_val_loss": curves["val_loss"][best, i], "early_stop_step": int(steps[best]),
            "early_stop_test_accuracy": curves["test_accuracy"][best, i],
            "density": d["prunable"], "density_all": d["all"], "density_per_leaf": d["per_leaf"]}
        for rate in ("dead_dynamic", "dead_static"):
            if rate in curves:
                members[name][f"final_{rate}"] = curves[rate][-1, i]
    return {"level": level, "members": members,
            "curves": {"step": steps, **{k: v.T for k, v in curves.items()}}, "names": names}


def aggregate(result: dict) -> dict:
    """{kind: {metric: spread (mean, sample std, n, values) and "replicates"}} over replicates; a member
    is named "kind/replicate"."""
    kinds = {}
    for name, m in result["members"].items():
        kind, replicate = name.split("/")
        for metric in (x for x in METRICS if x in m):
            kinds.setdefault(kind, {}).setdefault(metric, []).append((int(replicate), m[metric]))
    return {kind: {metric: {**spread([v for _, v in rv]), "replicates": [r for r, _ in rv]}
                   for metric, rv in ms.items()} for kind, ms in kinds.items()}


def summarize(rundir, levels: int, seconds: float) -> dict:
    out = []
    for level in range(levels + 1):
        result = read_json(rundir.file("levels", str(level), "result.json"))
        entry = {"level": level, "kinds": aggregate(result)}
        main = "dense" if level == 0 else "ticket"
        entry["density"] = entry["kinds"][main]["density"]["mean"]
        entry["density_all"] = entry["kinds"][main]["density_all"]["mean"]
        if "instability" in result:
            entry["instability_barrier"] = result["instability"]["barrier_mean"]
            entry["instability"] = spread([r["barrier"] for r in result["instability"]["replicates"]])
        out.append(entry)
    return {"experiment": "lottery", "levels": out, "wall_seconds": seconds}


def by_replicate(stat: dict) -> dict:
    return dict(zip(stat["replicates"], stat["values"]))


def accuracy_table(summary: dict, metric: str, title: str) -> dict:
    """One row per level: the ticket (the dense net at level 0), its paired difference with the dense net
    of the same replicate, and each control with the ticket's paired difference from it."""
    dense = summary["levels"][0]["kinds"]["dense"][metric]
    rows = []
    for entry in summary["levels"]:
        k = entry["kinds"]
        main = k.get("ticket", k.get("dense"))
        row = {"level": entry["level"], "% remaining": f"{100 * entry['density']:.2f}"}
        if "unit_density" in main:
            row["% units"] = f"{100 * main['unit_density']['mean']:.1f}"
        row["ticket"] = pm(main[metric]) + ("" if "ticket" in k else " (dense)")
        if metric == "early_stop_test_accuracy":
            row["ticket es-iter"] = f"{main['early_stop_step']['mean']:.0f}"
        if "ticket" in k:
            row["ticket - dense"] = pm_diff(paired(by_replicate(main[metric]), by_replicate(dense)))
        for c in CONTROLS:
            if c in k:
                row[c] = pm(k[c][metric])
                row[f"ticket - {c}"] = pm_diff(paired(by_replicate(main[metric]), by_replicate(k[c][metric])))
        rows.append(row)
    return table(title, rows, list(dict.fromkeys(c for r in rows for c in r)))


SPREAD = "mean ± sample std (ddof 1) over replicates, n = replicates; 'a - b': paired by replicate, with the " \
         "two-sided paired t-test's p"


def tables(summary: dict, rundir=None) -> list:
    """Every table of a lottery run: accuracy at the early-stopping iteration and at the last step (both,
    under headings that say which), dead-neuron rates and instability when measured, and, when the run
    has robustness.json, its tables."""
    out = [accuracy_table(summary, "early_stop_test_accuracy",
                          f"Test accuracy (%) at the early-stopping iteration (minimum validation loss); {SPREAD}"),
           accuracy_table(summary, "final_test_accuracy", f"Test accuracy (%) after the last step; {SPREAD}")]
    if any("final_dead_dynamic" in k for e in summary["levels"] for k in e["kinds"].values()):
        rows = []
        for e in summary["levels"]:
            row = {"% remaining": f"{100 * e['density']:.2f}"}
            for kind, stats in e["kinds"].items():
                if "final_dead_dynamic" in stats:
                    row[kind] = (f"{pm(stats['final_dead_dynamic'], digits=1)} / "
                                 f"{100 * stats['final_dead_static']['mean']:.1f}")
            rows.append(row)
        out.append(table("Dead ReLU units at the end of training (%, validation set, hidden layers pooled): "
                         f"dynamic rate (share of (example, unit) outputs exactly 0, {SPREAD.split(';')[0]}) / "
                         "static rate (share of units 0 on every example, mean)", rows))
    unstable = [e for e in summary["levels"] if "instability" in e]
    if unstable:
        rows = [{"level": e["level"], "% remaining": f"{100 * e['density']:.2f}",
                 "error barrier (points)": pm(e["instability"])} for e in unstable]
        out.append(table("Instability (linear mode connectivity, Frankle et al. 2020): the largest test error on "
                         "the straight line between two copies trained with different data orders, minus the mean "
                         f"of the end points' errors; {SPREAD.split(';')[0]}", rows))
    if rundir is not None and os.path.exists(rundir.file("robustness.json")):
        from lth_jax import robustness  # it imports this module
        out += robustness.tables(read_json(rundir.file("robustness.json")))
    return out


def print_summary(summary: dict) -> None:
    print_tables(tables(summary))


def draw(rundir, summary: dict) -> list:
    """Accuracy and early-stopping iteration against % of weights remaining."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for kind, (color, marker) in KIND_STYLE.items():
        pts = _points(summary, kind, "early_stop_test_accuracy")
        if not pts:
            continue
        x = np.array([100 * p[0] for p in pts])
        for ax, metric, scale in ((axes[0], "early_stop_test_accuracy", 100), (axes[1], "early_stop_step", 1)):
            band(ax, x, [p[1][metric] for p in pts], scale, color, marker, kind)
    dense = [e for e in summary["levels"] if "dense" in e["kinds"]]
    if dense:
        axes[0].axhline(100 * dense[0]["kinds"]["dense"]["early_stop_test_accuracy"]["mean"], color="gray",
                        ls="--", lw=1, label="dense")
    for ax, label in zip(axes, ("test accuracy at early stop (%)", "early-stopping iteration")):
        remaining_axis(ax, summary, label)
    axes[0].legend()
    fig.suptitle("lottery tickets vs. controls (mean ± std over replicates)")
    path = rundir.file("plots", "lottery.png")
    save_figure(fig, path)
    paths = [path]
    if any("final_dead_dynamic" in k for e in summary["levels"] for k in e["kinds"].values()):
        paths.append(_draw_dead_neurons(rundir, summary, plt))
    unstable = [(e["level"], e) for e in summary["levels"] if "instability_barrier" in e]
    if unstable:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for level, _ in unstable:
            result = read_json(rundir.file("levels", str(level), "result.json"))
            errs = np.array([r["test_error"] for r in result["instability"]["replicates"]])
            ax.plot(result["instability"]["replicates"][0]["alphas"], 100 * errs.mean(0), label=f"level {level}")
        ax.set_xlabel("interpolation α")
        ax.set_ylabel("test error (%)")
        ax.legend()
        ax.grid(alpha=0.3)
        path = rundir.file("plots", "instability.png")
        save_figure(fig, path)
        paths.append(path)
    return paths


def _points(summary, kind, metric) -> list:
    """[(density, stats)] of a kind's levels that have `metric`; the dense
    network is the ticket's point at 100%, not a kind of its own."""
    if kind == "dense":
        return []
    kinds = ("dense", "ticket") if kind == "ticket" else (kind,)
    return [(e["density"], e["kinds"][k]) for k in kinds for e in summary["levels"]
            if k in e["kinds"] and metric in e["kinds"][k]]


def _draw_dead_neurons(rundir, summary, plt) -> str:
    """Dynamic and static dead-neuron rates at the end of each level, per kind."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for kind, (color, marker) in KIND_STYLE.items():
        pts = _points(summary, kind, "final_dead_dynamic")
        if not pts:
            continue
        x = np.array([100 * p[0] for p in pts])
        for ax, metric in zip(axes, ("final_dead_dynamic", "final_dead_static")):
            band(ax, x, [p[1][metric] for p in pts], 100, color, marker, kind)
    for ax, label in zip(axes, ("dynamic dead-neuron rate (%)", "units dead on every example (%)")):
        remaining_axis(ax, summary, label)
    axes[0].legend()
    fig.suptitle("dead ReLU units at the end of training (validation set; mean ± std over replicates)")
    path = rundir.file("plots", "dead_neurons.png")
    save_figure(fig, path)
    return path
