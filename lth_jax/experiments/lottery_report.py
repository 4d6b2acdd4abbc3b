"""Per-level results, the summary, the table and the plots of a lottery run."""
from __future__ import annotations


import numpy as np

from lth_jax import ensemble
from lth_jax import masks as masks_lib
from lth_jax.figures import band, format_table, pm, pyplot, remaining_axis, save_figure
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
    """{kind: {metric: {"mean", "std", "values"}}} over replicates."""
    kinds = {}
    for name, m in result["members"].items():
        kind = name.split("/")[0]
        for metric in (x for x in METRICS if x in m):
            kinds.setdefault(kind, {}).setdefault(metric, []).append(m[metric])
    return {kind: {metric: {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": v}
                   for metric, v in ms.items()} for kind, ms in kinds.items()}


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
        out.append(entry)
    return {"experiment": "lottery", "levels": out, "wall_seconds": seconds}


def table_rows(summary: dict) -> list:
    rows = []
    for entry in summary["levels"]:
        k = entry["kinds"]
        main = k.get("ticket", k.get("dense"))
        row = {"level": entry["level"], "% remaining": f"{100 * entry['density']:.2f}"}
        if "unit_density" in main:
            row["% units"] = f"{100 * main['unit_density']['mean']:.1f}"
        row.update({"ticket acc": pm(main["early_stop_test_accuracy"]),
                    "ticket es-iter": f"{main['early_stop_step']['mean']:.0f}"})
        for c in CONTROLS:
            if c in k:
                row[f"{c} acc"] = pm(k[c]["early_stop_test_accuracy"])
        if "instability_barrier" in entry:
            row["instability"] = f"{entry['instability_barrier']:.4f}"
        rows.append(row)
    return rows


def print_summary(summary: dict) -> None:
    rows = table_rows(summary)
    columns = list(dict.fromkeys(c for r in rows for c in r))
    print("test accuracy (%) at the early-stopping iteration, mean±std over replicates")
    print(format_table(rows, columns))


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
