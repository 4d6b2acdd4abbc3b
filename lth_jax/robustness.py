"""The robustness lottery (Li et al. 2022): corrupted test accuracy of a
finished lottery run's networks, level by level, and the geometry of their
last layer on clean and corrupted data.

    python -m lth_jax.robustness WORKDIR [--severities 1,3,5] [--corruptions a,b] [--examples N]

For every level of the run it evaluates the dense network (level 0) and each
replicate's ticket (``levels/L/ticket_final.npz``) on the test set corrupted
by every corruption that fits the inputs (`lth_jax.data.corruptions`:
images or 1-D signals) at each severity, one seeded draw per (corruption,
severity), the same for every network. Geometry (`lth_jax.geometry`): the
distributions of ||h|| and theta_y of the dense network and the sparsest
ticket, clean and under each corruption at the highest severity. The
controls' trained weights are not kept by a lottery run, so only tickets
and the dense network are evaluated; models with BatchNorm need their batch
statistics, which the lottery's files do not hold, and are refused.

Writes ``robustness.json`` and ``plots/robustness.png`` (accuracy vs %
weights remaining per corruption) and ``plots/geometry.png`` into WORKDIR.
"""
from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_dict

from lth_jax import ensemble, geometry, npz
from lth_jax.data import corruptions
from lth_jax.errors import LthError, check
from lth_jax.figures import pyplot, remaining_axis, save_figure
from lth_jax.files import read_json, write_json
from lth_jax.train import call_model, init_variables
from lth_jax.workdir import RunDir, is_run


def accuracy(model, variables, x, y, chunk: int = 1000) -> float:
    correct = 0
    for i in range(0, len(y), chunk):
        out, _ = call_model(model, variables, x[i:i + chunk], train=False)
        correct += int(jnp.sum(jnp.argmax(out, -1) == y[i:i + chunk]))
    return correct / len(y)


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
    return {"h_norm": h.tolist(), "theta_y": theta.tolist(), "h_norm_mean": float(h.mean()),
            "theta_y_mean": float(theta.mean()), "margin_mean": float(np.mean(np.asarray(g["margin"])))}


def evaluate(workdir: str, severities=(1, 3, 5), names=None, examples: int = 2000, seed: int = 0) -> dict:
    from lth_jax.experiments import common
    rundir = RunDir(workdir)
    check(is_run(rundir.path), f"{workdir} is not a lth_jax workdir (no config.json)")
    config = read_json(rundir.file("config.json"))
    check(config.get("experiment") == "lottery", f"{workdir} holds a {config.get('experiment')!r} run; "
                                                 "robustness evaluates lottery runs")
    check(rundir.finished, f"{workdir} is not finished (no summary.json); finish it by running the same command")
    cfg = config_dict.ConfigDict(config)
    ds = common.load_data(cfg, cfg.seed)
    model = common.build_model(cfg, ds.num_classes)
    example = init_variables(model, jax.random.key(0), ds.input_shape)
    check(not example.get("batch_stats"), f"{cfg.model.name} has BatchNorm statistics, which a lottery run's "
                                          "files do not keep; robustness evaluates models without BatchNorm")
    valid = corruptions.names_for(ds.input_shape)
    names = list(names or valid)
    for n in names:
        check(n in valid, f"corruption {n!r} does not apply to inputs of shape {ds.input_shape}; valid: "
                          f"{', '.join(valid)}")
    for s in severities:
        check(s in (1, 2, 3, 4, 5), f"severities must be in 1..5, got {s}")
    n = min(examples, len(ds.y_test))
    x, y = jnp.asarray(ds.x_test[:n]), jnp.asarray(ds.y_test[:n])
    mean = 0.0 if ds.mean is None else ds.mean
    std = 1.0 if ds.std is None else ds.std
    sets = corrupted_sets(x, y, names, severities, jax.random.key(seed), mean, std)
    summary = read_json(rundir.file("summary.json"))
    levels = [e["level"] for e in summary["levels"]]
    like = ensemble.stack([example["params"] for _ in range(cfg.lottery.seeds)])
    out = {"examples": n, "severities": list(severities), "corruptions": names, "levels": []}
    finals = {}
    for level in levels:
        finals[level] = npz.load(rundir.file("levels", str(level), "ticket_final.npz"), like, what="trained networks")
        kind = "dense" if level == 0 else "ticket"
        entry = {"level": level, "density": next(e["density"] for e in summary["levels"] if e["level"] == level),
                 "kind": kind, "clean": [], "corrupted": {f"{c}:{s}": [] for c, s in sets}}
        for r in range(cfg.lottery.seeds):
            v = {"params": ensemble.take(finals[level], r)}
            entry["clean"].append(accuracy(model, v, x, y))
            for (c, s), xc in sets.items():
                entry["corrupted"][f"{c}:{s}"].append(accuracy(model, v, xc, y))
        out["levels"].append(entry)
    top = max(severities)
    out["geometry"] = {}
    for label, level in (("dense", levels[0]), ("sparsest ticket", levels[-1])):
        v = {"params": ensemble.take(finals[level], 0)}
        out["geometry"][label] = {"clean": geometry_stats(model, v, x, y),
                                  **{c: geometry_stats(model, v, sets[(c, top)], y) for c in names}}
    return out


def draw(rundir, result: dict) -> list:
    plt = pyplot()
    names, sev = result["corruptions"], result["severities"]
    cols = min(4, len(names) + 1)
    rows = -(-(len(names) + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    x = [100 * e["density"] for e in result["levels"]]
    summary = {"levels": result["levels"]}
    for ax, name in zip(axes.ravel(), ["clean", *names]):
        if name == "clean":
            ax.plot(x, [100 * np.mean(e["clean"]) for e in result["levels"]], "o-", color="black", ms=3)
        else:
            for s, color in zip(sev, ("tab:green", "tab:orange", "tab:red", "tab:purple", "tab:brown")):
                ax.plot(x, [100 * np.mean(e["corrupted"][f"{name}:{s}"]) for e in result["levels"]], "o-",
                        color=color, ms=3, label=f"severity {s}")
            ax.legend(fontsize=6)
        remaining_axis(ax, summary, "test accuracy (%)")
        ax.set_title(name, fontsize=9)
    for ax in axes.ravel()[len(names) + 1:]:
        ax.axis("off")
    fig.suptitle("dense (100%) and tickets under corruptions (mean over replicates)")
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
    except (LthError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rundir = RunDir(args.workdir)
    write_json(rundir.file("robustness.json"), result)
    paths = draw(rundir, result)
    top = max(result["severities"])
    print(f"test accuracy (%), mean over replicates; corruptions at severity {top}")
    header = ["level", "% remaining", "clean", *result["corruptions"]]
    print("  ".join(f"{h:>14}" for h in header))
    for e in result["levels"]:
        cells = [str(e["level"]), f"{100 * e['density']:.2f}", f"{100 * np.mean(e['clean']):.2f}",
                 *[f"{100 * np.mean(e['corrupted'][f'{c}:{top}']):.2f}" for c in result["corruptions"]]]
        print("  ".join(f"{c:>14}" for c in cells))
    print(f"results: {rundir.file('robustness.json')}, {', '.join(paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
