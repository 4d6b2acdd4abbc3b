"""Crash harness: run main.py in a subprocess, SIGKILL it (or Ctrl-C it, or
fill its disk) at a named moment (`LTH_JAX_KILL_AT`, `LTH_JAX_KILL_WITH`, see
lth_jax/files.py), run the same command to the end, and compare every output
file with an uninterrupted run's."""
import json
import os
import signal
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Files whose bytes depend on the run's history, not its numbers: orbax checkpoints
# (timestamps), TensorBoard events (wall times), set-aside damaged checkpoints.
SKIPPED_DIRS = {"checkpoints", "tensorboard", "damaged"}
# provenance: the command names the workdir, and the date and commit of the finishing process
WALL_KEYS = {"wall_seconds", "examples_per_second", "train_seconds", "measure_seconds", "provenance"}


# The runs of one test session share JAX's persistent compilation cache: a
# killed run, its resumption and the reference compile the same programs.
CACHE = os.path.join(tempfile.gettempdir(), f"lth_jax_test_xla_cache_{os.getppid()}")


def main_py(workdir, args, kill_at=None, timeout=300, program=(os.path.join(ROOT, "main.py"),), kill_with=None,
            **popen):
    env = dict(os.environ)
    env.pop("LTH_JAX_KILL_AT", None)
    env.pop("LTH_JAX_KILL_WITH", None)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", CACHE)
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    if kill_at:
        env["LTH_JAX_KILL_AT"] = kill_at
    if kill_with:
        env["LTH_JAX_KILL_WITH"] = kill_with
    return subprocess.run([sys.executable, *program, "--workdir", str(workdir), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, **popen)


# How each fault ends the command: its exit code and the start of its one line on stderr.
FAULTS = {"SIGKILL": (-signal.SIGKILL, None), "SIGINT": (130, "interrupted "),
          "ENOSPC": (2, "error: no space left on the device")}


def killed_at_each(workdir, args, kill_points: list, **kw):
    """Run, stopped at each of `kill_points` in turn (each asserted), then to the end.
    A kill point is a moment (SIGKILLed there) or (moment, fault), the fault one of
    FAULTS: SIGINT (Ctrl-C) or ENOSPC (a full disk) end with exactly one line on stderr."""
    for point in kill_points:
        kill_at, fault = (point, "SIGKILL") if isinstance(point, str) else point
        run = main_py(workdir, args, kill_at=kill_at, kill_with=fault, **kw)
        code, line = FAULTS[fault]
        assert run.returncode == code, (kill_at, run.returncode, run.stderr[-2000:])
        if line:
            lines = run.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(line), (kill_at, run.stderr[-3000:])
            assert lines[0].endswith("run the same command to resume"), lines
    last = main_py(workdir, args, **kw)
    assert last.returncode == 0, last.stderr[-3000:]
    return last


def killed_then_resumed(workdir, args, kill_at, between=None, **kw):
    """Run until SIGKILLed at `kill_at` (asserted), call between(workdir), run again to the end."""
    first = main_py(workdir, args, kill_at=kill_at, **kw)
    assert first.returncode == -signal.SIGKILL, (kill_at, first.returncode, first.stderr[-2000:])
    if between is not None:
        between(workdir)
    second = main_py(workdir, args, **kw)
    assert second.returncode == 0, second.stderr[-3000:]
    return second


def outputs(workdir) -> dict:
    """relative path -> content: JSON parsed without wall times, anything else as bytes."""
    out = {}
    for folder, dirs, files in os.walk(workdir):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, workdir)
            with open(path, "rb") as f:
                data = f.read()
            out[rel] = _strip(json.loads(data)) if name.endswith(".json") else data
    return out


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in WALL_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def foreign_entries(workdir) -> list:
    """What a run (or a sweep and its runs) holds at its top that workdir.RUN_ENTRIES
    does not name: --overwrite would refuse to replace it."""
    from lth_jax.workdir import RUN_ENTRIES
    runs = os.path.join(workdir, "runs")
    folders = [workdir] + ([os.path.join(runs, r) for r in os.listdir(runs)] if os.path.isdir(runs) else [])
    return [os.path.join(f, e) for f in folders for e in os.listdir(f) if e not in RUN_ENTRIES]


def assert_same_outputs(reference, resumed):
    assert not foreign_entries(reference), foreign_entries(reference)
    a, b = outputs(reference), outputs(resumed)
    assert sorted(a) == sorted(b), (sorted(set(a) ^ set(b)))
    different = [k for k in a if a[k] != b[k]]
    assert not different, f"files differ after resume: {different}"


SWEEP = ("-m", "lth_jax.sweep")  # main_py(..., program=SWEEP) runs a sweep


# Runs shrunk to seconds: the crash tests' command lines.
SHRUNK = ["--config.train.steps=200", "--config.train.eval_every=50", "--config.train.checkpoint_every=100",
          "--config.data.source.num_samples=1000", "--config.model.widths=(32,)", "--noprogress"]
LOTTERY = SHRUNK + ["--config.lottery.levels=1", "--config.lottery.seeds=1"]
REWIND_K = LOTTERY + ["--config.lottery.rewind_step=100", "--config.lottery.robustness=True",
                      "--config.lottery.robustness_severities=(3,)"]
DIET = ["--config=configs/diet_mnist1d.py"] + SHRUNK[:-1] + ["--config.diet.members=2", "--config.diet.seeds=1",
                      "--config.diet.fractions=(0.5,)", "--config.diet.full_data=False",
                      "--config.diet.score_epochs=30.0", "--config.data.validation_size=100", "--noprogress"]
UNIT = ["--config=configs/unit_search_mnist1d.py"] + SHRUNK[:-2] + [
    "--config.model.widths=(32,16)", "--config.unit_search.candidates=3", "--config.unit_search.keep=1",
    "--config.unit_search.seeds=1", "--config.unit_search.sparsities=(0.5,)", "--config.unit_search.criterion_step=50",
    "--config.data.validation_size=100", "--noprogress"]
PRUNE_AT_INIT = ["--config=configs/prune_at_init_mnist1d.py"] + SHRUNK[:-2] + [
    "--config.model.widths=(32,16)", "--config.prune_at_init.densities=(0.1,)", "--config.prune_at_init.seeds=1",
    "--config.prune_at_init.methods=('snip','synflow')", "--config.prune_at_init.synflow_rounds=10",
    "--config.data.validation_size=100", "--noprogress"]
MEASURES = ["--config=configs/measures_mnist1d.py"] + SHRUNK[:-2] + [
    "--config.measures.widths=((16,),)", "--config.measures.learning_rates=(0.001,0.003)",
    "--config.measures.weight_decays=(0.0,)", "--config.measures.seeds=1", "--config.measures.label_noise=(0.0,)",
    "--config.measures.samples=2", "--config.measures.stop_loss=1.8",  # the lr 3e-3 member stops at step 100
    "--config.measures.lottery_levels=1",
    "--config.data.validation_size=100", "--noprogress"]
