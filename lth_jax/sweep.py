"""A sweep: one experiment config run at every point of a grid of overrides.

    python -m lth_jax.sweep --config configs/X.py --sweep configs/sweeps/Y.py --workdir DIR [--config.a.b=value]

The sweep file's ``get_sweep()`` returns ``{config key: [values]}``; the grid
is every combination, in the file's order. The axis ``replicate`` (0, 1, ...)
is the experiment's own replicate seed: replicate r is the member trained
with seed r beside the others (``diet.seeds``, ``lottery.seeds``).

Points that differ only in axes the experiment stacks itself are one run,
trained as one vmapped program whose members are spread over all devices of
all processes: the replicates, and for the diet its kept fractions and
selections (``diet.fractions``, ``diet.selections``: a point gives one value,
the run trains the union). Every other axis (learning rate, weight decay,
``seed``, lottery settings, ...) changes the compiled program or what it
trains on, so its points run one after another.

DIR holds ``config.json`` (the base config and the axes), ``runs/NNN/`` (each
run an ordinary workdir: ``python -m lth_jax.report DIR/runs/NNN`` redraws
it), ``points/NNN.json`` (a point's values, its run, its member and its
row), and at the end ``points.csv`` (one row per point), ``table.txt``,
``plots/sweep.png`` (the headline metric over the axes, mean and spread over
replicates; lottery sweeps also ``plots/sweep_density.png``) and, last,
``summary.json``, which marks the sweep finished (as in every run).
A killed sweep resumes with the same command: finished runs are skipped and
the unfinished one resumes from its checkpoints.
"""
from __future__ import annotations

import csv
import dataclasses
import importlib.util
import io
import itertools
import os
import sys
import time

import numpy as np

from lth_jax import cli, files, parallel
from lth_jax.errors import LthError, check
from lth_jax.figures import format_table, pyplot, save_figure, table
from lth_jax.files import read_json, write_json
from lth_jax.stats import pm, spread
from lth_jax.trainer import Diverged
from lth_jax.workdir import RunDir

REPLICATE = "replicate"
HEADLINE = "test_accuracy"


@dataclasses.dataclass
class Point:
    index: int
    values: dict  # axis -> this point's value
    run: int = 0  # index of the run that trains it

    @property
    def replicate(self) -> int:
        return int(self.values.get(REPLICATE, 0))

    @property
    def where(self) -> str:
        return f"sweep point {self.index} ({label(self.values)})"


@dataclasses.dataclass
class Run:
    index: int
    overrides: dict  # config key -> value, applied to the base config
    points: list

    @property
    def folder(self) -> str:
        return os.path.join("runs", f"{self.index:03d}")


def say(*args, **kw) -> None:
    """print, on process 0 only."""
    if parallel.writes_files():
        print(*args, **kw)


def short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def label(values: dict) -> str:
    """"fractions=0.3, scope=global": config keys by their last part; tuples comma-joined."""
    return ", ".join(f"{short(k)}={','.join(map(fmt, v)) if isinstance(v, tuple) else fmt(v)}"
                     for k, v in values.items())


# ---- the sweep file and the plan --------------------------------------------------------------
def load_axes(path: str) -> dict:
    """{axis: [values]} from the sweep file's get_sweep(), checked."""
    if not os.path.isfile(path):
        raise LthError(f"sweep file {path} does not exist")
    spec = importlib.util.spec_from_file_location("lth_jax_sweep_file", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise LthError(f"the sweep file {path} has a syntax error at line {e.lineno}: {e.msg}") from None
    except Exception as e:  # noqa: BLE001 -- whatever the user's file raises, in one line
        raise LthError(f"cannot load the sweep file {path}: {cli.first_line(e)}") from None
    check(callable(getattr(module, "get_sweep", None)), f"the sweep file {path} has no get_sweep() function "
                                                        "returning {config key: [values]}")
    axes = module.get_sweep()
    check(isinstance(axes, dict) and axes, f"get_sweep() in {path} must return a non-empty dict "
                                           f"{{config key: [values]}}, got {type(axes).__name__}")
    out = {}
    for key, values in axes.items():
        check(key != "experiment", "a sweep runs the experiment of its --config: 'experiment' cannot be a sweep "
                                   "axis; run one sweep per experiment")
        check(isinstance(values, (list, tuple)) and len(values) > 0,
              f"sweep axis {key!r} must list at least one value, got {values!r}")
        values = [tuple(v) if isinstance(v, list) else v for v in values]
        check(len(set(map(repr, values))) == len(values), f"sweep axis {key!r} lists a value twice: {values}")
        if key == REPLICATE:
            check(all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values),
                  f"sweep axis 'replicate' must list whole numbers >= 0 (replicate seeds), got {values}")
        out[str(key)] = values
    return out


def plan(cfg, axes: dict, experiment) -> tuple:
    """(points, runs): the grid, and the runs that train it (points differing only
    in stacked axes share a run)."""
    stacked = set(getattr(experiment, "SWEEP_STACKED", ()))
    replicates = getattr(experiment, "SWEEP_REPLICATES", None)
    if REPLICATE in axes:
        check(replicates is not None, f"the sweep does not stack the replicates of the {cfg.experiment} "
                                      "experiment; sweep 'seed' instead of 'replicate' (one run per seed)")
        check(replicates not in axes, f"sweep either 'replicate' or {replicates!r}: replicate sets {replicates}")
    for key in axes:
        if key != REPLICATE:
            check_key(cfg, key)
    separate = [k for k in axes if k != REPLICATE and k not in stacked]
    points = [Point(i, dict(zip(axes, combo))) for i, combo in enumerate(itertools.product(*axes.values()))]
    runs = {}
    for p in points:
        key = tuple(repr(p.values[k]) for k in separate)
        run = runs.setdefault(key, Run(len(runs), {k: p.values[k] for k in separate}, []))
        run.points.append(p.index)
        p.run = run.index
    for run in runs.values():
        members = [points[i] for i in run.points]
        for key in axes:
            if key in stacked:
                run.overrides[key] = tuple(dict.fromkeys(v for p in members for v in as_tuple(p.values[key])))
        if REPLICATE in axes:
            run.overrides[replicates] = max(p.replicate for p in members) + 1
    return points, list(runs.values())


def as_tuple(value) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def check_key(cfg, key: str) -> None:
    node = cfg
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            raise LthError(f"sweep axis {key!r} is not a config key (no {part!r}); check the spelling against "
                           "configs/base.py, or use 'replicate'")
        node = node[part]


def configured(cfg, overrides: dict, where: str):
    """A copy of `cfg` with `overrides` ({dotted key: value}); a scalar for a tuple key is a 1-tuple."""
    out = cfg.copy_and_resolve_references()
    for key, value in overrides.items():
        *path, last = key.split(".")
        node = out
        for part in path:
            node = node[part]
        if isinstance(node[last], tuple):
            value = as_tuple(value)
            why = cli.element_type_error(value, node[last])
            check(why is None, f"{where}: cannot set {key} = {value!r}: {why}")
        try:
            node[last] = value
        except (TypeError, ValueError) as e:
            raise LthError(f"{where}: cannot set {key} = {value!r}: {cli.first_line(e)}") from None
    return out


def point_config(cfg, point: Point):
    return configured(cfg, {k: v for k, v in point.values.items() if k != REPLICATE}, point.where)


# ---- running it ---------------------------------------------------------------------------------
class Sweep:
    def __init__(self, cfg, axes: dict, workdir: str, experiment, progress=True):
        self.cfg, self.axes, self.experiment, self.progress = cfg, axes, experiment, progress
        self.points, self.runs = plan(cfg, axes, experiment)
        self.rundir = RunDir(workdir)
        self.rows = {}
        # every point, then every run, checked before anything is written
        self.point_configs = [point_config(cfg, p) for p in self.points]
        for p, c in zip(self.points, self.point_configs):
            self.check(c, p.where)
        self.run_configs = [configured(cfg, r.overrides, f"sweep run {r.index}") for r in self.runs]
        for r, c in zip(self.runs, self.run_configs):
            self.check(c, f"sweep run {r.index}")

    def check(self, cfg, where: str) -> None:
        try:
            cli.check_config(cfg)
            self.experiment.check_config(cfg)
        except (LthError, cli.BadInput, TypeError, ValueError) as e:
            raise LthError(f"{where}: {cli.first_line(e)}") from None

    def spec(self) -> dict:
        return {"experiment": "sweep", "swept_experiment": self.cfg.experiment, "axes": self.axes,
                "config": self.cfg.to_dict()}

    def run(self, overwrite=False) -> dict:
        self.rundir.start(self.spec(), overwrite)
        try:
            t0 = time.time()
            for run, cfg in zip(self.runs, self.run_configs):
                self.train(run, cfg)
            rows = [self.rows[p.index] for p in self.points]
            summary = summarize(rows, self.axes, self.cfg.experiment, time.time() - t0)
            table = format_table(summary["table"])

            def write_outputs():
                write_csv(self.rundir.file("points.csv"), rows, self.axes)
                files.atomic_write(self.rundir.file("table.txt"), (table + "\n").encode())
                draw(self.rundir, summary, rows)
            self.rundir.finish(summary, write_outputs)
            say(tables(summary)[0]["title"])
            say(table)
            say(f"sweep results in {self.rundir.path}: summary.json, points.csv, table.txt, plots/; each run's "
                  "own files in runs/NNN/")
            return summary
        finally:
            self.rundir.close()

    def train(self, run: Run, cfg) -> None:
        folder = self.rundir.file(run.folder)
        what = label(run.overrides) or "the base config"
        if RunDir(folder).finished:
            say(f"sweep run {run.index + 1} of {len(self.runs)} ({what}): done", flush=True)
        else:
            say(f"sweep run {run.index + 1} of {len(self.runs)} ({what}): {len(run.points)} point(s)", flush=True)
            files.KILL_SCOPE = f"{run.folder}/"  # crash tests name a moment inside one run of the sweep
            try:
                self.experiment.run(cfg, folder, overwrite=False, progress=self.progress)
            except Diverged as e:
                raise Diverged(e.step, f"{e.reason}, in sweep run {run.index}: {what}, {run.folder}") from None
            finally:
                files.KILL_SCOPE = ""
        row_of = getattr(self.experiment, "sweep_row", summary_row)
        for i in run.points:
            p = self.points[i]
            self.rows[i] = {"point": p.index, "values": p.values, "run": run.folder, "replicate": p.replicate,
                            "row": row_of(RunDir(folder), self.point_configs[i], p.replicate)}
            write_json(self.rundir.file("points", f"{p.index:03d}.json"), self.rows[i])


def summary_row(rundir, cfg, replicate) -> dict:
    """For an experiment without its own sweep_row: the numbers of summary.json,
    '/'-joined keys; `test_accuracy` from its final evaluation."""
    summary = read_json(rundir.file("summary.json"))
    row = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}/", v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            row[prefix[:-1]] = value
    walk("", {k: v for k, v in summary.items() if k != "provenance"})
    if HEADLINE not in row and f"final/{HEADLINE}" in row:
        row[HEADLINE] = row[f"final/{HEADLINE}"]
    return row


# ---- results ------------------------------------------------------------------------------------
def headlines(points: list) -> list:
    """The metrics the table and plot show: `test_accuracy`, or where a point
    covers several results (a diet point with several fractions or selections)
    each "WHAT/test_accuracy"."""
    row = points[0]["row"]
    keys = [HEADLINE] if HEADLINE in row else [k for k in row if k.endswith(f"/{HEADLINE}")]
    if not keys:
        raise LthError(f"the sweep's rows have no {HEADLINE}: {', '.join(row) or 'no numbers'}")
    return keys


def summarize(points: list, axes: dict, experiment: str, seconds: float) -> dict:
    """The points' rows and one table row per combination of the axes other than replicate."""
    shown = [k for k in axes if k != REPLICATE]
    groups = {}
    for p in points:
        groups.setdefault(tuple(repr(p["values"][k]) for k in shown), []).append(p)
    table = []
    for members in groups.values():
        row = {short(k): fmt(members[0]["values"][k]) for k in shown}
        for key in headlines(points):
            row[f"final {key} (%)"] = pm(spread([m["row"].get(key, float("nan")) for m in members]))
        if "density" in members[0]["row"]:
            row["% remaining"] = f"{100 * members[0]['row']['density']:.2f}"
        table.append(row)
    return {"experiment": "sweep", "swept_experiment": experiment, "axes": axes, "points": points, "table": table,
            "wall_seconds": seconds}


def tables(summary: dict, rundir=None) -> list:
    return [table(f"Final {HEADLINE.replace('_', ' ')} (%) after the last step, at each combination of the "
                  "axes other than the replicate; mean ± sample std (ddof 1) over replicates, n = replicates",
                  summary["table"])]


def write_csv(path: str, points: list, axes: dict) -> None:
    metrics = list(dict.fromkeys(k for p in points for k in p["row"] if k != "series"))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["point", "run", *axes, *metrics])
    for p in points:
        writer.writerow([p["point"], p["run"], *(fmt(p["values"][k]) for k in axes),
                         *(p["row"].get(k, "") for k in metrics)])
    files.atomic_write(path, out.getvalue().encode())


def draw(rundir, summary: dict, points: list) -> list:
    """plots/sweep.png: the headline metric over the first numeric axis (else the
    first axis), one line per combination of the other axes, mean ± std over
    replicates; with per-level series (lottery), plots/sweep_density.png."""
    axes = [k for k in summary["axes"] if k != REPLICATE]
    plt = pyplot()
    paths = []
    numeric = [k for k in axes if all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                      for v in summary["axes"][k])]
    x_axis = (numeric or axes or [REPLICATE])[0]
    others = [k for k in axes if k != x_axis]
    metrics = headlines(points)
    xs_all = [fmt(x) for x in summary["axes"].get(x_axis, [0])]
    lines = {}
    for p in points:
        for metric in metrics:
            name = ", ".join(filter(None, [label({k: p["values"][k] for k in others}),
                                           metric if len(metrics) > 1 else ""]))
            lines.setdefault(name, {}).setdefault(fmt(p["values"].get(x_axis, 0)), []).append(
                p["row"].get(metric, np.nan))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, by_x in lines.items():
        xs = [x for x in xs_all if x in by_x]
        pos = [float(x) for x in xs] if x_axis in numeric else [xs_all.index(x) for x in xs]
        mean = np.array([np.mean(by_x[x]) for x in xs]) * 100
        std = np.array([spread(by_x[x])["std"] or 0.0 for x in xs]) * 100
        ax.errorbar(pos, mean, yerr=std, marker="o", capsize=3, label=name or None)
    if x_axis not in numeric:
        ax.set_xticks(range(len(xs_all)), xs_all)
    ax.set_xlabel(x_axis)
    ax.set_ylabel(points[0]["row"].get("series", {}).get("y_label", f"{HEADLINE.replace('_', ' ')} (%)")
                  + (" at the sparsest level" if "series" in points[0]["row"] else ""))
    ax.set_title(f"{summary['swept_experiment']} sweep, mean ± sample std over replicates")
    if any(lines):
        ax.legend(fontsize=7)
    paths.append(rundir.file("plots", "sweep.png"))
    save_figure(fig, paths[-1])
    if any("series" in p["row"] for p in points):
        paths.append(draw_series(rundir, summary, points, axes))
    return paths


def draw_series(rundir, summary, points, axes) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    lines = {}
    for p in points:
        lines.setdefault(label({k: p["values"][k] for k in axes}), []).append(p["row"]["series"])
    for name, series in lines.items():
        x = np.array(series[0]["x"]) * 100
        y = np.array([s["y"] for s in series]) * 100
        ax.errorbar(x, y.mean(0), yerr=y.std(0, ddof=1) if len(y) > 1 else None, marker="o", ms=3, capsize=2,
                    label=name or None)
    ax.set_xscale("log")
    ticks = sorted({round(100 * d, 3) for s in lines.values() for d in s[0]["x"]})
    ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
    ax.xaxis.set_minor_locator(plt.matplotlib.ticker.NullLocator())
    ax.invert_xaxis()
    first = points[0]["row"]["series"]
    ax.set_xlabel(first["x_label"])
    ax.set_ylabel(first["y_label"])
    ax.set_title(f"{summary['swept_experiment']} sweep, mean ± sample std over replicates")
    if axes:
        ax.legend(fontsize=7)
    path = rundir.file("plots", "sweep_density.png")
    save_figure(fig, path)
    return path


def redraw(rundir, config) -> list:
    summary = read_json(rundir.file("summary.json"))
    summary["axes"] = {k: [as_value(v) for v in vs] for k, vs in summary["axes"].items()}
    for p in summary["points"]:
        p["values"] = {k: as_value(v) for k, v in p["values"].items()}
    return draw(rundir, summary, summary["points"])


def as_value(v):
    """A value read back from JSON as the sweep file gave it (lists were tuples)."""
    return tuple(as_value(x) for x in v) if isinstance(v, list) else v


def start(cmd: cli.Command):
    """What cli.run runs for a sweep command, after every point is checked."""
    experiment = cli.prepare(cmd, check_sections=False)  # checked per point by Sweep
    sweep = Sweep(cmd.config, load_axes(cmd.sweep), cmd.workdir, experiment, cmd.progress)
    return lambda: sweep.run(cmd.overwrite)


def main(argv=None) -> int:
    return cli.main(sys.argv if argv is None else argv, usage=__doc__, sweep=True, start=start)


if __name__ == "__main__":
    cli.process(main, sys.argv)
