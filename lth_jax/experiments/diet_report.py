"""Summary, table and plots of a data-diet run."""
from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from lth_jax import subsets
from lth_jax.figures import print_tables, pyplot, save_figure, table as make_table
from lth_jax.stats import paired, pm, pm_diff, spread


def summarize(results: list, table: dict, flipped, d, seconds: float) -> dict:
    accuracy = {}
    for res in results:
        by_sel = {}
        for name, m in res["members"].items():
            sel, seed = name.split("/")
            by_sel.setdefault(sel, []).append((int(seed), m["final_test_accuracy"]))
        for sel, values in by_sel.items():
            accuracy.setdefault(sel, {})[f"{res['fraction']:g}"] = {
                **spread([v for _, v in values]), "seeds": [r for r, _ in values], "kept": res["kept"]}
    names = [k for k in table if k.endswith("_mean")]
    correlations = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            correlations[f"{a[:-5]} vs {b[:-5]}"] = float(spearmanr(table[a], table[b]).statistic)
    out = {"experiment": "diet", "test_accuracy": accuracy, "spearman": correlations,
           "score_steps": int(table.get("score_steps", 0)), "wall_seconds": seconds}
    if len(flipped):
        out["label_noise"] = {
            "flipped": int(len(flipped)),
            "auroc": {n[:-5]: subsets.auroc(table[n], flipped) for n in names},
            "precision_at_noise_rate": {n[:-5]: subsets.precision_at(table[n], flipped) for n in names}}
    return out


SPREAD = "mean ± sample std (ddof 1) over seeds, n = seeds"


def tables(summary: dict, rundir=None) -> list:
    """Accuracy per selection and kept fraction; each selection minus random (paired by seed: seed r
    shares its initialisation and data order across selections); score correlations; flipped labels."""
    acc = summary["test_accuracy"]
    fractions = sorted({f for sel in acc.values() for f in sel}, key=float)
    rows = [{"selection": sel, **{f"keep {f}": pm(v[f]) for f in fractions if f in v}} for sel, v in acc.items()]
    out = [make_table(f"Test accuracy (%) after the last step of training on the kept examples; {SPREAD}", rows,
                      ["selection"] + [f"keep {f}" for f in fractions])]
    if "random" in acc:
        def seeds(v):
            return dict(zip(v["seeds"], v["values"]))
        diffs = [{"selection": f"{sel} - random", **{f"keep {f}": pm_diff(paired(seeds(v[f]), seeds(acc["random"][f])))
                                                     for f in fractions if f in v and f in acc["random"]}}
                 for sel, v in acc.items() if sel not in ("random", "full")]
        out.append(make_table("Selection minus random, test accuracy (points); paired by seed, mean ± sample std, "
                              "two-sided paired t-test p", diffs, ["selection"] + [f"keep {f}" for f in fractions]))
    if summary["spearman"]:
        out.append(make_table(f"Spearman correlation of the ensemble-mean scores over the training examples "
                              f"(scores after {summary['score_steps']} steps; grand_init at initialisation)",
                              [{"scores": k, "Spearman": f"{v:+.3f}"} for k, v in summary["spearman"].items()]))
    if "label_noise" in summary:
        ln = summary["label_noise"]
        out.append(make_table(f"Finding the {ln['flipped']} flipped labels: AUROC of each score, and the share of "
                              f"flipped examples among its top {ln['flipped']}",
                              [{"score": k, "AUROC": f"{v:.3f}", "precision": f"{ln['precision_at_noise_rate'][k]:.3f}"}
                               for k, v in ln["auroc"].items()]))
    return out


def print_summary(summary: dict) -> None:
    print_tables(tables(summary))


def draw(rundir, summary: dict, table: dict, flipped) -> list:
    plt = pyplot()
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for sel, by_f in summary["test_accuracy"].items():
        fs = sorted(by_f, key=float)
        mean = np.array([by_f[f]["mean"] for f in fs]) * 100
        std = np.array([by_f[f]["std"] or 0.0 for f in fs]) * 100
        x = [100 * float(f) for f in fs]
        if sel == "full":
            ax.axhline(mean[0], color="gray", ls="--", lw=1, label="full data")
            continue
        ax.errorbar(x, mean, yerr=std, marker="o", ms=4, capsize=3, label=sel)
    ax.set_xlabel("% of training examples kept")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    if summary["test_accuracy"]:
        ax.legend()
    path = rundir.file("plots", "accuracy_vs_kept.png")
    save_figure(fig, path)
    paths.append(path)

    names = [k for k in table if k.endswith("_mean")]
    if names:
        fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
        is_flipped = np.zeros(len(table["indices"]), bool)
        is_flipped[np.asarray(flipped, np.int64)] = True
        for ax, n in zip(axes[0], names):
            values = table[n]
            bins = np.histogram_bin_edges(values, 50)
            if is_flipped.any():
                ax.hist(values[~is_flipped], bins, alpha=0.6, density=True, label="clean")
                ax.hist(values[is_flipped], bins, alpha=0.6, density=True, label="flipped")
                ax.legend()
            else:
                ax.hist(values, bins)
            ax.set_title(n[:-5])
        path = rundir.file("plots", "score_histograms.png")
        save_figure(fig, path)
        paths.append(path)
    return paths
