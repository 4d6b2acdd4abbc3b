"""Re-run every command behind docs/results.md, then rebuild it from the runs' files.

    python docs/reproduce.py                      # every run not yet finished under runs/, then the file
    python docs/reproduce.py --fresh              # delete those runs first: all of them again (about 2 h on 2 cores)
    python docs/reproduce.py --only lenet_fashion,diet_fashion
    python docs/reproduce.py --tables-only        # rebuild docs/results.md from the finished runs

Not part of the test suite. docs/results.in.md holds the prose; in it, a line
``{{report NAME}}`` becomes the markdown of ``python -m lth_jax.report
runs/NAME --markdown`` (the command, the commit and config hash that made the
run, and its tables; ``{{report NAME 1,3}}`` its tables 1 and 3, the command
only where the run is first named), and ``{{figure NAME PLOT IMAGE}}`` copies the run's
``plots/PLOT`` to ``docs/img/IMAGE`` and shows it. A killed reproduction
resumes: each run resumes where it stopped, finished runs are skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

DOCS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DOCS)
MAIN = ["main.py"]
LENET = ["--config=configs/lottery_lenet300_fashion.py"]
FASHION_DIET = ["--config=configs/diet_fashion.py"]
SCORES_ONLY = ["--config.diet.selections=('random',)", "--config.diet.fractions=()", "--config.diet.full_data=False"]
MNIST1D_LOTTERY = ["--config=configs/lottery_mnist1d.py"]
AP = ["--config.lottery.levels=14", "--config.lottery.seeds=3", "--config.train.log_activations=True"]

# name -> the command after `python`, in the order they run (pai_mnist1d reads ap_mnist1d_0.0's tickets)
RUNS = {
    "lenet_fashion": MAIN + LENET + ["--config.lottery.levels=15", "--config.train.log_activations=True",
                                     "--config.lottery.robustness=True", "--config.lottery.instability_levels=(0,5,10,15)"],
    "mnist1d_lottery": MAIN + MNIST1D_LOTTERY,
    "diet_fashion": MAIN + FASHION_DIET,
    "diet_fashion_scores": MAIN + FASHION_DIET + SCORES_ONLY + [
        "--config.diet.scores=('el2n','grand','grand_init','input_norm')"],
    "diet_fashion_noise": MAIN + FASHION_DIET + SCORES_ONLY + ["--config.diet.label_noise=0.1"],
    "ap_mnist1d_0.0": MAIN + AP + ["--config.lottery.ap_fraction=0.0"],
    "ap_mnist1d_0.1": MAIN + AP + ["--config.lottery.ap_fraction=0.1"],
    "unit_search_mnist1d": MAIN + ["--config=configs/unit_search_mnist1d.py"],
    "structured_imp_mnist1d": MAIN + MNIST1D_LOTTERY + [
        "--config.optimizer.learning_rate=2e-3", "--config.train.steps=1000", "--config.lottery.granularity=units",
        "--config.lottery.levels=10", "--config.lottery.seeds=2"],
    "unit_search_fashion": MAIN + ["--config=configs/unit_search_fashion.py"],
    "pai_mnist1d": MAIN + ["--config=configs/prune_at_init_mnist1d.py",
                           "--config.prune_at_init.lottery_workdir=runs/ap_mnist1d_0.0"],
    "pai_fashion": MAIN + ["--config=configs/prune_at_init_lenet300_fashion.py"],
    "measures_mnist1d": MAIN + ["--config=configs/measures_mnist1d.py"],
    "measures_tickets_mnist1d": MAIN + ["--config=configs/measures_tickets_mnist1d.py"],
    "sweep_diet_mnist1d": ["-m", "lth_jax.sweep", "--config=configs/diet_mnist1d.py",
                           "--sweep=configs/sweeps/diet_mnist1d.py"],
    "sweep_lottery_mnist1d": ["-m", "lth_jax.sweep", *MNIST1D_LOTTERY, "--sweep=configs/sweeps/lottery_rewind_scope.py",
                              "--config.lottery.levels=3", "--config.lottery.controls=('random_prune',)"],
}


def workdir(name: str) -> str:
    return os.path.join("runs", name)


def finished(name: str) -> bool:
    return os.path.exists(os.path.join(ROOT, workdir(name), "summary.json"))


def run(name: str) -> None:
    cmd = [sys.executable, *RUNS[name], f"--workdir={workdir(name)}", "--noprogress"]
    log = os.path.join(ROOT, "runs", f"{name}.log")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd[1:])} (log: {log})", flush=True)
    t0 = time.time()
    with open(log, "a") as out:
        code = subprocess.call(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit(f"{name} failed with exit code {code}; see {log} (run this script again to resume)")
    print(f"[{time.strftime('%H:%M:%S')}] {name}: done in {time.time() - t0:.0f} s", flush=True)


def report(name: str, only: list, header: bool) -> str:
    from lth_jax import report as report_lib
    from lth_jax.errors import LthError
    try:
        return report_lib.markdown(os.path.join(ROOT, workdir(name)), only, header).rstrip("\n")
    except LthError as e:
        raise SystemExit(f"report of {name}: {e}") from None


def commits(names) -> dict:
    out = {}
    for name in names:
        with open(os.path.join(ROOT, workdir(name), "summary.json")) as f:
            prov = json.load(f).get("provenance") or {}
        key = (prov.get("commit") or "unknown")[:10] + (" (uncommitted changes)" if prov.get("dirty") else "")
        out.setdefault(key, []).append(name)
    return out


def build() -> None:
    with open(os.path.join(DOCS, "results.in.md")) as f:
        template = f.read()
    used = []

    def fill(m):
        kind, args = m.group(1), m.group(2).split()
        used.append(args[0])
        if args[0] not in RUNS:
            raise SystemExit(f"results.in.md names run {args[0]!r}, which docs/reproduce.py does not make")
        if kind == "report":  # {{report NAME}} or {{report NAME 1,2}}: those tables; the command once per run
            only = [int(i) for i in args[1].split(",")] if len(args) > 1 else None
            return report(args[0], only, header=used.count(args[0]) == 1)
        name, plot, image = args
        shutil.copyfile(os.path.join(ROOT, workdir(name), "plots", plot), os.path.join(DOCS, "img", image))
        return f"![{name}: {plot}](img/{image})"
    text = re.sub(r"^\{\{(report|figure) ([^}]+)\}\}$", fill, template, flags=re.M)
    made = commits(sorted(set(used)))
    header = "; ".join(f"commit {c}: {len(n)} runs" for c, n in made.items())
    text = text.replace("{{commits}}", header)
    with open(os.path.join(DOCS, "results.md"), "w") as f:
        f.write(text)
    print(f"docs/results.md rebuilt from {len(set(used))} runs ({header})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated run names (default: all)")
    parser.add_argument("--fresh", action="store_true", help="delete the runs first, so they are made again")
    parser.add_argument("--tables-only", action="store_true", help="only rebuild docs/results.md")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(RUNS)
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise SystemExit(f"unknown run(s) {', '.join(unknown)}; known: {', '.join(RUNS)}")
    if not args.tables_only:
        for name in names:
            if args.fresh and os.path.exists(os.path.join(ROOT, workdir(name))):
                shutil.rmtree(os.path.join(ROOT, workdir(name)))
            if not finished(name):
                run(name)
    build()


if __name__ == "__main__":
    main()
