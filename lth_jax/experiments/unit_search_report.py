"""Per-sparsity results, the summary, the table and the plots of a unit_search run."""
from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from lth_jax.figures import band, print_tables, pyplot, save_figure, table
from lth_jax.stats import paired, pm, pm_diff, spread

GROUPS = ("searched", "random", "magnitude")
STYLE = {"searched": ("tab:blue", "o"), "random": ("tab:orange", "s"), "magnitude": ("tab:green", "^")}
METRICS = ("early_stop_test_accuracy", "early_stop_step", "final_test_accuracy")


def members_result(names: list, records: list, unit_sets: list) -> dict:
    """Final and early-stopping metrics of every member (early stop = minimum validation loss)."""
    steps = [r["step"] for r in records]
    val = np.array([np.asarray(r["val_loss"], np.float64) for r in records])
    test = np.array([np.asarray(r["test_accuracy"], np.float64) for r in records])
    members = {}
    for i, name in enumerate(names):
        best = int(np.argmin(val[:, i]))
        members[name] = {"final_test_accuracy": float(test[-1, i]), "early_stop_step": int(steps[best]),
                         "early_stop_test_accuracy": float(test[best, i]), "min_val_loss": float(val[best, i])}
        if unit_sets:
            members[name]["units"] = {"/".join(g): "".join("1" if k else "0" for k in keep)
                                      for g, keep in unit_sets[i].items()}
            members[name]["units_kept"] = int(sum(np.sum(k) for k in unit_sets[i].values()))
    return {"members": members}


def sparsity_result(sparsity, names, records, unit_sets, replicates, n, keep, criterion_step, init_eval):
    """members_result plus each candidate's criterion and the searched / random sets. Per replicate the
    members are n candidates, `keep` fresh random masks (the random set, never searched), the magnitude mask."""
    out = members_result(names, records, unit_sets)
    if criterion_step == 0:
        criterion = np.asarray(init_eval["val_loss"], np.float64)
    else:
        criterion = np.asarray(next(r["val_loss"] for r in records if r["step"] == criterion_step), np.float64)
    chosen = {"searched": [], "random": [], "magnitude": []}
    for j, r in enumerate(replicates):
        first = j * (n + keep + 1)
        cands = [f"candidate_{c}/{r}" for c in range(n)]
        values = criterion[first:first + n]
        for c, name in enumerate(cands):
            out["members"][name]["criterion"] = float(values[c])
        chosen["searched"] += [cands[c] for c in np.argsort(values, kind="stable")[:keep]]
        chosen["random"] += [f"random_{c}/{r}" for c in range(keep)]
        chosen["magnitude"].append(f"magnitude/{r}")
    out.update(sparsity=sparsity, criterion_step=criterion_step, chosen=chosen)
    return out


def _per_replicate_mean(members: dict, names: list, metric: str) -> dict:
    by = {}
    for name in names:
        by.setdefault(int(name.split("/")[1]), []).append(members[name][metric])
    return {r: float(np.mean(v)) for r, v in by.items()}


def summarize(dense: dict, results: list, widths: dict, seconds: float) -> dict:
    dense_m = list(dense["members"].values())
    entries = []
    for res in results:
        m = res["members"]
        entry = {"sparsity": res["sparsity"], "groups": {}, "searched_minus_random": {}}
        for group in GROUPS:
            entry["groups"][group] = {k: spread([m[name][k] for name in res["chosen"][group]]) for k in METRICS}
        for k in ("early_stop_test_accuracy", "final_test_accuracy"):
            entry["searched_minus_random"][k] = paired(_per_replicate_mean(m, res["chosen"]["searched"], k),
                                                       _per_replicate_mean(m, res["chosen"]["random"], k))
        cands = [v for k, v in m.items() if k.startswith("candidate_")]
        rho = spearmanr([c["criterion"] for c in cands], [c["final_test_accuracy"] for c in cands])[0]
        entry["criterion_spearman"] = None if np.isnan(rho) else float(rho)  # low loss vs high accuracy: < 0
        entry["units_kept"] = cands[0]["units_kept"]
        entries.append(entry)
    return {"experiment": "unit_search", "sparsities": [r["sparsity"] for r in results],
            "hidden_units": int(sum(widths.values())), "layers": ["/".join(g) for g in widths],
            "dense": {k: spread([d[k] for d in dense_m]) for k in METRICS},
            "levels": entries, "wall_seconds": seconds}


def tables(summary: dict, rundir=None) -> list:
    rows = []
    for e in summary["levels"]:
        g = e["groups"]
        row = {"node sparsity": f"{100 * e['sparsity']:.0f}%", "units kept": e["units_kept"]}
        for group in GROUPS:
            row[group] = pm(g[group]["early_stop_test_accuracy"])
        row["searched - random"] = pm_diff(e["searched_minus_random"]["early_stop_test_accuracy"])
        for group in ("searched", "random"):
            row[f"{group} es-iter"] = f"{g[group]['early_stop_step']['mean']:.0f}"
        rho = e["criterion_spearman"]
        row["criterion rho"] = "n/a" if rho is None else f"{rho:+.2f}"
        rows.append(row)
    return [table("Test accuracy (%) at the early-stopping iteration (minimum validation loss); mean ± sample std "
                  "(ddof 1) over the members of each set, n = members; searched - random: the difference of the two "
                  "sets' means within each replicate, paired over replicates (two-sided paired t-test p); dense "
                  f"parent {pm(summary['dense']['early_stop_test_accuracy'])}; criterion rho: Spearman of the "
                  "candidates' criterion (validation loss) with their final test accuracy", rows)]


def print_summary(summary: dict) -> None:
    print_tables(tables(summary))


def draw(rundir, summary: dict, results: list) -> list:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = [100 * (1 - e["sparsity"]) for e in summary["levels"]]
    for group in GROUPS:
        color, marker = STYLE[group]
        for ax, metric, scale in ((axes[0], "early_stop_test_accuracy", 100), (axes[1], "early_stop_step", 1)):
            band(ax, x, [e["groups"][group][metric] for e in summary["levels"]], scale, color, marker, group)
    axes[0].axhline(100 * summary["dense"]["early_stop_test_accuracy"]["mean"], color="gray", ls="--", label="dense")
    for ax, label in zip(axes, ("test accuracy at early stop (%)", "early-stopping iteration")):
        ax.set_xlabel("% of hidden units kept")
        ax.set_ylabel(label)
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("searched vs random unit masks (mean ± std)")
    paths = [rundir.file("plots", "unit_search.png")]
    save_figure(fig, paths[0])
    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.6), squeeze=False)
    for ax, res, e in zip(axes[0], results, summary["levels"]):
        cands = [v for k, v in res["members"].items() if k.startswith("candidate_")]
        ax.scatter([c["criterion"] for c in cands], [100 * c["final_test_accuracy"] for c in cands], s=12)
        rho = e["criterion_spearman"]
        ax.set_title(f"{100 * res['sparsity']:.0f}% of units removed, rho = " + ("n/a" if rho is None else f"{rho:+.2f}"))
        ax.set_xlabel(f"val loss at step {res['criterion_step']} (criterion)")
        ax.set_ylabel("final test accuracy (%)")
        ax.grid(alpha=0.3)
    paths.append(rundir.file("plots", "criterion.png"))
    save_figure(fig, paths[1])
    return paths
