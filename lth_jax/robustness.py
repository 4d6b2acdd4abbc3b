"""The robustness lottery (Li et al. 2022): corrupted test accuracy of a
finished lottery run's networks, level by level, and the geometry of their
last layer on clean and corrupted data.

    python -m lth_jax.robustness WORKDIR [--severities 1,3,5] [--corruptions a,b] [--examples N]

For every level of the run it evaluates the networks the run kept, on the
test set corrupted by every corruption that fits the inputs
(`lth_jax.data.corruptions`: images or 1-D signals) at each severity, one
seeded draw per (corruption, severity), the same for every network:
- with ``lottery.keep_members = True`` (or ``lottery.robustness = True``) each
  level's ``final.npz`` holds every member's trained weights and BatchNorm
  statistics: the dense network (level 0), the tickets and every control;
- otherwise only ``ticket_final.npz`` exists: the dense network and the
  tickets, and models with BatchNorm are refused (their statistics are not
  in that file).
Geometry (`lth_jax.geometry`): the distributions of ||h|| and theta_y of the
dense network and the sparsest ticket, clean and under each corruption at
the highest severity, and how well theta_y tells their misclassified
examples from the correct ones (`separation`: Cohen's d, AUROC, Mann-Whitney U);
the logits rebuilt from the decomposition are checked against the model's
(`logit_rebuild_error`, relative to the largest |logit|; the report says
whether it is within 1e-5).

``lottery.robustness = True`` runs this at the end of the lottery run itself
(``lottery.robustness_severities``, ``robustness_corruptions``,
``robustness_examples``). Writes ``robustness.json`` and
``plots/robustness.png`` (accuracy vs % weights remaining per corruption, one
line per kind of network) and ``plots/geometry.png`` into WORKDIR.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_dict

from lth_jax import ensemble, geometry, npz
from lth_jax.data import corruptions
from lth_jax.errors import LthError, check
from lth_jax.figures import print_tables, pyplot, remaining_axis, save_figure, table
from lth_jax.files import read_json, write_json
from lth_jax.stats import paired, pm, pm_diff, spread
from lth_jax.train import call_model, init_variables
from lth_jax.workdir import RunDir, is_run


def accuracy(model, variables, x, y, chunk: int = 1000) -> float:
    correct = 0
    count = _correct(model)
    for i in range(0, len(y), chunk):
        correct += int(count(variables, x[i:i + chunk], y[i:i + chunk]))
    return correct / len(y)


@functools.lru_cache(maxsize=8)
def _correct(model):
    """The compiled count of correct predictions of `model` on a batch."""
    return jax.jit(lambda v, x, y: jnp.sum(jnp.argmax(call_model(model, v, x, train=False)[0], -1) == y))


def corrupted_sets(x, y, names, severities, key, mean, std):
    """{(name, severity): corrupted x} (standardised like x), one draw each."""
    out = {}
    for i, name in enumerate(names):
        for s in severities:
            k = jax.random.fold_in(jax.random.fold_in(key, i), s)
            out[(name, s)] = corruptions.standardized(name, s, k, x, mean, std)
    return out


def geometry_stats(model, variables, x, y) -> dict:
    g = geometry.of_model(model, variables, x, y)
    h, theta = np.asarray(g["h_norm"]), np.asarray(g["theta_y"])
    margin = np.asarray(g["margin"])
    model_logits = np.asarray(g["model_logits"], np.float64)
    rebuild = np.abs(np.asarray(g["logits"], np.float64) - model_logits).max() / max(1.0, np.abs(model_logits).max())
    return {"h_norm": h.tolist(), "theta_y": theta.tolist(), "h_norm_mean": float(h.mean()),
            "theta_y_mean": float(theta.mean()), "margin_mean": float(margin.mean()),
            "theta_y_separation": separation(theta, margin > 0), "logit_rebuild_error": float(rebuild)}


def separation(values, correct) -> dict | None:
    """How well `values` (theta_y) tell misclassified examples from correct ones:
    the means, Cohen's d (pooled standard deviation), the AUROC (the chance that
    a misclassified example has the larger value) and the two-sided
    Mann-Whitney U test's p-value; None unless both groups have 2 examples."""
    from scipy import stats
    values, correct = np.asarray(values, np.float64), np.asarray(correct, bool)
    right, wrong = values[correct], values[~correct]
    if len(right) < 2 or len(wrong) < 2:
        return None
    pooled = np.sqrt(((len(right) - 1) * right.var(ddof=1) + (len(wrong) - 1) * wrong.var(ddof=1))
                     / (len(right) + len(wrong) - 2))
    u, p = stats.mannwhitneyu(wrong, right, alternative="two-sided")
    return {"correct": int(len(right)), "misclassified": int(len(wrong)), "mean_correct": float(right.mean()),
            "mean_misclassified": float(wrong.mean()), "cohens_d": float((wrong.mean() - right.mean()) / pooled),
            "auroc": float(u / (len(right) * len(wrong))), "mann_whitney_p": float(p)}


def check_options(severities, names, input_shape, prefix: str = "") -> list:
    """The corruption names to evaluate (`names`, or every one that fits
    `input_shape` when empty), after checking them and the severities; errors
    name the options as `prefix` + "severities" / "corruptions"."""
    check(len(severities) > 0, f"{prefix}severities is empty; give e.g. (1, 3, 5)")
    for s in severities:
        check(s in (1, 2, 3, 4, 5), f"{prefix}severities must be in 1..5, got {s!r}")
    valid = corruptions.names_for(input_shape)
    for n in names or ():
        check(n in valid, f"{prefix}corruptions has {n!r}, which does not apply to inputs of shape {input_shape}; "
                          f"valid: {', '.join(valid)}")
    return list(names or valid)


def evaluate(workdir: str, severities=(1, 3, 5), names=None, examples: int = 2000, seed: int = 0,
             finished: bool = True) -> dict:
    """The corruption table and geometry of a lottery workdir's networks (see
    the module docstring); `finished=False` lets a run evaluate itself before
    it writes its summary."""
    from lth_jax.experiments import common
    check(examples >= 1, f"the test examples evaluated (--examples, lottery.robustness_examples) must be >= 1, "
                         f"got {examples}")
    rundir = RunDir(workdir)
    check(is_run(rundir.path), f"{workdir} is not a lth_jax workdir (no config.json)")
    config = read_json(rundir.file("config.json"))
    check(config.get("experiment") == "lottery", f"{workdir} holds a {config.get('experiment')!r} run; "
                                                 "robustness evaluates lottery runs")
    check(not finished or rundir.finished, f"{workdir} is not finished (no summary.json); finish it by running "
                                           "the same command")
    cfg = config_dict.ConfigDict(config)
    ds = common.load_data(cfg, cfg.seed)
    model = common.build_model(cfg, ds.num_classes)
    example = init_variables(model, jax.random.key(0), ds.input_shape)
    levels = list(range(cfg.lottery.levels + 1))
    results = [read_json(rundir.file("levels", str(level), "result.json")) for level in levels]
    networks = [_networks(rundir, level, result, example, cfg) for level, result in zip(levels, results)]
    names = check_options(severities, names, ds.input_shape)
    n = min(examples, len(ds.y_test))
    x, y = jnp.asarray(ds.x_test[:n]), jnp.asarray(ds.y_test[:n])
    mean = 0.0 if ds.mean is None else ds.mean
    std = 1.0 if ds.std is None else ds.std
    sets = corrupted_sets(x, y, names, severities, jax.random.key(seed), mean, std)
    out = {"examples": n, "severities": list(severities), "corruptions": names, "levels": []}
    for level, result, nets in zip(levels, results, networks):
        density = np.mean([m["density"] for name, m in result["members"].items()
                           if name.split("/")[0] in ("dense", "ticket")])
        for kind, variables in nets.items():
            entry = {"level": level, "density": float(density), "kind": kind, "clean": [],
                     "corrupted": {f"{c}:{s}": [] for c, s in sets}}
            for v in variables:
                entry["clean"].append(accuracy(model, v, x, y))
                for (c, s), xc in sets.items():
                    entry["corrupted"][f"{c}:{s}"].append(accuracy(model, v, xc, y))
            out["levels"].append(entry)
    top = max(severities)
    out["geometry"] = {}
    for label, nets in (("dense", networks[0]), ("sparsest ticket", networks[-1])):
        v = next(iter(nets.values()))[0]
        out["geometry"][label] = {"clean": geometry_stats(model, v, x, y),
                                  **{c: geometry_stats(model, v, sets[(c, top)], y) for c in names}}
    return out


def _networks(rundir, level: int, result: dict, example: dict, cfg) -> dict:
    """{kind: [variables of each replicate]} of a level, in the order of its
    result's member names (dense/r, ticket/r, then each control's)."""
    names = list(result["members"])
    kept = rundir.file("levels", str(level), "final.npz")
    one = {"params": example["params"], "batch_stats": example.get("batch_stats", {})}
    if os.path.exists(kept):
        stacked = npz.load(kept, ensemble.stack([one for _ in names]), what="trained networks")
        members = {name: ensemble.take(stacked, i) for i, name in enumerate(names)}
    else:
        check(not example.get("batch_stats"), f"{cfg.model.name} has BatchNorm statistics, which this run's "
                                              "ticket_final.npz does not hold; run the lottery with "
                                              "lottery.keep_members=True (or lottery.robustness=True)")
        like = ensemble.stack([example["params"] for _ in range(cfg.lottery.seeds)])
        finals = npz.load(rundir.file("levels", str(level), "ticket_final.npz"), like, what="trained networks")
        kind = "dense" if level == 0 else "ticket"
        members = {f"{kind}/{r}": {"params": ensemble.take(finals, r)} for r in range(cfg.lottery.seeds)}
    out = {}
    for name, v in members.items():
        v = {k: t for k, t in v.items() if k == "params" or t}
        out.setdefault(name.split("/")[0], []).append(v)
    return out


REBUILD_TOLERANCE = 1e-5  # the decomposition must give back the model's logits

KIND_STYLE = {"dense": ("black", "-"), "ticket": ("tab:blue", "-"), "reinit": ("tab:orange", "--"),
              "random_prune": ("tab:green", "--"), "shuffle": ("tab:purple", ":")}


def _curve(result: dict, kind: str, value) -> tuple:
    """(% remaining, mean accuracy %) of `kind` over levels, the dense net at level 0."""
    entries = [e for e in result["levels"] if e["kind"] in (kind, "dense")]
    return [100 * e["density"] for e in entries], [100 * np.mean(value(e)) for e in entries]


def draw(rundir, result: dict) -> list:
    plt = pyplot()
    names, sev = result["corruptions"], result["severities"]
    kinds = [k for k in KIND_STYLE if k != "dense" and any(e["kind"] == k for e in result["levels"])]
    top = max(sev)
    cols = min(4, len(names) + 1)
    rows = -(-(len(names) + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
    fig.subplots_adjust(hspace=0.45, wspace=0.3)  # room for each panel's title under the row above
    summary = {"levels": [e for e in result["levels"] if e["kind"] in ("dense", "ticket")]}
    for ax, name in zip(axes.ravel(), ["clean", *names]):
        for kind in kinds:
            color, ls = KIND_STYLE[kind]
            if name == "clean":
                ax.plot(*_curve(result, kind, lambda e: e["clean"]), "o", ls=ls, color=color, ms=3, label=kind)
                continue
            ax.plot(*_curve(result, kind, lambda e: e["corrupted"][f"{name}:{top}"]), "o", ls=ls, color=color,
                    ms=3, label=f"{kind}, severity {top}")
            if kind == "ticket":  # the milder severities, for the ticket only
                for s, alpha in zip(sorted(sev)[:-1], (0.35, 0.6, 0.8, 0.9)):
                    ax.plot(*_curve(result, kind, lambda e: e["corrupted"][f"{name}:{s}"]), "o", ls=":",
                            color=color, alpha=alpha, ms=2, label=f"ticket, severity {s}")
        ax.legend(fontsize=5)
        remaining_axis(ax, summary, "test accuracy (%)")
        ax.set_title(name, fontsize=9)
    for ax in axes.ravel()[len(names) + 1:]:
        ax.axis("off")
    fig.suptitle("dense (100%), tickets and controls under corruptions (mean over replicates)")
    paths = [rundir.file("plots", "robustness.png")]
    save_figure(fig, paths[0])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, style in (("dense", "-"), ("sparsest ticket", "--")):
        g = result["geometry"][label]
        for cond, color in (("clean", "black"), *[(c, plt.cm.tab10(i)) for i, c in enumerate(names)]):
            for ax, key in zip(axes, ("h_norm", "theta_y")):
                ax.hist(g[cond][key], bins=30, histtype="step", ls=style, color=color,
                        label=f"{label}, {cond}" if key == "h_norm" else None, density=True)
    axes[0].set_xlabel("||h|| (penultimate features)")
    axes[1].set_xlabel("theta_y (radians)")
    axes[0].legend(fontsize=5)
    fig.suptitle(f"last-layer geometry, clean vs corrupted at severity {max(sev)}")
    paths.append(rundir.file("plots", "geometry.png"))
    save_figure(fig, paths[1])
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lth_jax.robustness", description=__doc__.splitlines()[0])
    ap.add_argument("workdir")
    ap.add_argument("--severities", default="1,3,5")
    ap.add_argument("--corruptions", default="", help="comma list; default: every one that fits the inputs")
    ap.add_argument("--examples", type=int, default=2000, help="test examples evaluated")
    args = ap.parse_args(argv)
    try:
        severities = tuple(int(s) for s in args.severities.split(",") if s.strip())
        names = [n.strip() for n in args.corruptions.split(",") if n.strip()] or None
        result = evaluate(args.workdir, severities, names, args.examples)
        write(RunDir(args.workdir), result)
    except (LthError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        from lth_jax.cli import os_error
        print(f"error: {os_error(e)}", file=sys.stderr)
        return 2
    return 0


def write(rundir, result: dict) -> None:
    """robustness.json, the plots, and the tables (`tables`)."""
    write_json(rundir.file("robustness.json"), result)
    paths = draw(rundir, result)
    print_tables(tables(result))
    print(f"results: {rundir.file('robustness.json')}, {', '.join(paths)}")


def tables(result: dict) -> list:
    """Accuracy at the highest severity per network (mean ± sample std over replicates), the tickets'
    paired differences from each control, the last layer's geometry and the theta_y separation."""
    top = max(result["severities"])
    columns = ["clean", *result["corruptions"]]

    def values(e, c):
        return e["clean"] if c == "clean" else e["corrupted"][f"{c}:{top}"]
    rows = [{"level": e["level"], "% remaining": f"{100 * e['density']:.2f}", "network": e["kind"],
             **{c: pm(spread(values(e, c))) for c in columns}} for e in result["levels"]]
    out = [table(f"Test accuracy (%) on the first {result['examples']} test examples, corruptions at severity {top}; "
                 "mean ± sample std (ddof 1) over replicates, n = replicates", rows)]
    by_level = {}
    for e in result["levels"]:
        by_level.setdefault(e["level"], {})[e["kind"]] = e
    diffs = []
    for level, kinds in by_level.items():
        for control in (k for k in kinds if k not in ("dense", "ticket")):
            if "ticket" in kinds:
                t, c = kinds["ticket"], kinds[control]
                diffs.append({"level": level, "% remaining": f"{100 * t['density']:.2f}", "ticket -": control,
                              **{col: pm_diff(paired(dict(enumerate(values(t, col))), dict(enumerate(values(c, col)))))
                                 for col in columns}})
    out.append(table(f"Ticket minus control, test accuracy (points), severity {top}; paired by replicate, "
                     "mean ± sample std, two-sided paired t-test p", diffs))
    geo = []
    for label, conditions in result["geometry"].items():
        for cond, g in conditions.items():
            row = {"network": label, "data": cond if cond == "clean" else f"{cond} {top}",
                   "||h||": f"{g['h_norm_mean']:.2f}", "theta_y (rad)": f"{g['theta_y_mean']:.3f}",
                   "margin": f"{g['margin_mean']:.2f}"}
            sep = g.get("theta_y_separation")
            if sep:
                row.update({"misclassified": sep["misclassified"], "theta_y wrong": f"{sep['mean_misclassified']:.3f}",
                            "theta_y right": f"{sep['mean_correct']:.3f}", "Cohen's d": f"{sep['cohens_d']:.2f}",
                            "AUROC": f"{sep['auroc']:.3f}", "Mann-Whitney p": f"{sep['mann_whitney_p']:.2g}"})
            geo.append(row)
    worst = max(g["logit_rebuild_error"] for conditions in result["geometry"].values() for g in conditions.values())
    out.append(table(f"Last-layer geometry (replicate 0, means over the examples): feature norm ||h||, angle theta_y to "
                     "the true class's weights, margin; does theta_y separate the misclassified examples (Cohen's d "
                     "with the pooled std, AUROC = chance a misclassified example has the larger theta_y, two-sided "
                     f"Mann-Whitney U)? Logits rebuilt from the decomposition to {worst:.1e} of the largest |logit| "
                     f"({'within' if worst <= REBUILD_TOLERANCE else 'OVER'} the {REBUILD_TOLERANCE:g} check)", geo))
    return out


if __name__ == "__main__":
    sys.exit(main())
