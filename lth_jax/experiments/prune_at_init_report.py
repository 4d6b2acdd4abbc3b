"""The summary, tables and plot of a prune_at_init run."""
from __future__ import annotations

import numpy as np

from lth_jax.experiments.lottery_report import aggregate, by_replicate
from lth_jax.figures import band, print_tables, pyplot, remaining_axis, save_figure, table
from lth_jax.stats import paired, pm, pm_diff

COLORS = {"snip": "tab:blue", "grasp": "tab:orange", "synflow": "tab:green", "magnitude": "tab:red",
          "random": "tab:gray"}
METRIC = "early_stop_test_accuracy"


def summarize(results: list, methods, controls, lottery: dict | None, seconds: float) -> dict:
    """Per density: {kind: {metric: stats}} (kinds "snip", "snip+shuffle", ...)
    and how many members lost a whole layer; the IMP tickets of `lottery`."""
    levels = []
    for res in results:
        entry = {"density": res["density"], "kinds": aggregate(res), "layer_collapse": {}}
        for name, m in res["members"].items():
            kind = name.split("/")[0]
            entry["layer_collapse"][kind] = entry["layer_collapse"].get(kind, 0) + int(m["layer_collapse"])
        levels.append(entry)
    out = {"experiment": "prune_at_init", "methods": list(methods), "controls": list(controls),
           "levels": levels, "wall_seconds": seconds}
    if lottery is not None:
        out["lottery"] = [{"density": e["density"], METRIC: e["kinds"]["ticket" if e["level"] else "dense"][METRIC]}
                          for e in lottery["levels"]]
    return out


def table_rows(summary: dict) -> list:
    rows = []
    for e in summary["levels"]:
        row = {"% remaining": f"{100 * e['density']:.2f}"}
        for m in summary["methods"]:
            row[m] = pm(e["kinds"][m][METRIC]) + ("*" if e["layer_collapse"][m] else "")
        imp = nearest_ticket(summary, e["density"])
        if imp:
            row["IMP ticket (nearest level)"] = f"{pm(imp[METRIC])} at {100 * imp['density']:.2f}%"
        rows.append(row)
    return rows


def nearest_ticket(summary: dict, density: float) -> dict | None:
    """The lottery level whose density is nearest `density` (within a factor 1.25), or None."""
    tickets = summary.get("lottery", [])
    best = min(tickets, key=lambda t: abs(np.log(t["density"] / density)), default=None)
    return best if best is not None and abs(np.log(best["density"] / density)) <= np.log(1.25) else None


def control_rows(summary: dict) -> list:
    """The sanity checks: control minus method, in points of accuracy, paired by replicate."""
    rows = []
    for e in summary["levels"]:
        for c in summary["controls"]:
            row = {"% remaining": f"{100 * e['density']:.2f}", "control": c}
            for m in summary["methods"]:
                row[m] = pm_diff(paired(by_replicate(e["kinds"][f"{m}+{c}"][METRIC]),
                                        by_replicate(e["kinds"][m][METRIC])))
            rows.append(row)
    return rows


def tables(summary: dict, rundir=None) -> list:
    out = [table("Test accuracy (%) at the early-stopping iteration (minimum validation loss); mean ± sample std "
                 "(ddof 1) over replicates, n = replicates (* = some replicate lost a whole layer)", table_rows(summary))]
    if summary["controls"]:
        out.append(table("Control minus the method's own mask, test accuracy at the early-stopping iteration "
                         "(points; Frankle et al. 2021: near 0 for methods at init); paired by replicate, mean ± "
                         "sample std, two-sided paired t-test p", control_rows(summary)))
    return out


def print_summary(summary: dict) -> None:
    print_tables(tables(summary))


def draw(rundir, summary: dict) -> list:
    plt = pyplot()
    panels = 1 + len(summary["controls"])
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    axes = axes[0]
    x = np.array([100 * e["density"] for e in summary["levels"]])
    imp = summary.get("lottery")
    for ax, control in zip(axes, [None, *summary["controls"]]):
        for m in summary["methods"]:
            kind = m if control is None else f"{m}+{control}"
            band(ax, x, [e["kinds"][kind][METRIC] for e in summary["levels"]], 100, COLORS[m], "o", kind)
            if control is not None:  # the method's own mask, faint, for the comparison
                ax.plot(x, [100 * e["kinds"][m][METRIC]["mean"] for e in summary["levels"]], color=COLORS[m],
                        ls=":", lw=1)
        if imp:
            band(ax, [100 * t["density"] for t in imp], [t[METRIC] for t in imp], 100, "black", "s", "IMP ticket")
        remaining_axis(ax, {"levels": [*summary["levels"], *(imp or [])]}, "test accuracy at early stop (%)")
        ax.set_title("masks at initialisation" if control is None else f"{control} control (dotted: unchanged)")
        ax.legend(fontsize=7)
    fig.suptitle("pruning at initialisation vs. density (mean ± std over replicates)")
    path = rundir.file("plots", "prune_at_init.png")
    save_figure(fig, path)
    return [path]
