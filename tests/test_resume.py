"""A run SIGKILLed at any moment and restarted with the same command ends with
the same files, bit for bit (wall times aside), as a run never interrupted."""
import glob
import os
import re
import signal
import subprocess
import sys

import pytest

from crash import ROOT, assert_same_outputs, killed_then_resumed, main_py

SHRUNK = ["--config.train.steps=200", "--config.train.eval_every=50", "--config.train.checkpoint_every=100",
          "--config.data.source.num_samples=1000", "--config.model.widths=(32,)", "--noprogress"]
LOTTERY = SHRUNK + ["--config.lottery.levels=1", "--config.lottery.seeds=1"]
REWIND_K = LOTTERY + ["--config.lottery.rewind_step=100"]
DIET = ["--config=configs/diet_mnist1d.py"] + SHRUNK[:-1] + ["--config.diet.members=2", "--config.diet.seeds=1",
                      "--config.diet.fractions=(0.5,)", "--config.diet.full_data=False",
                      "--config.diet.score_epochs=30.0", "--config.data.validation_size=100", "--noprogress"]


UNIT = ["--config=configs/unit_search_mnist1d.py"] + SHRUNK[:-2] + [
    "--config.model.widths=(32,16)", "--config.unit_search.candidates=3", "--config.unit_search.keep=1",
    "--config.unit_search.seeds=1", "--config.unit_search.sparsities=(0.5,)", "--config.unit_search.criterion_step=50",
    "--config.data.validation_size=100", "--noprogress"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs, made once: name -> workdir."""
    made = {}

    def get(name, args):
        if name not in made:
            workdir = tmp_path_factory.mktemp(f"ref_{name}")
            out = main_py(workdir, args)
            assert out.returncode == 0, out.stderr[-3000:]
            made[name] = workdir
        return made[name]
    return get


@pytest.mark.parametrize("kill_at", [
    "metrics:levels/0:150",     # inside the dense level (rewind to init): the rewind point must not move
    "metrics:levels/1:150",     # inside a pruned level
    "write:mask.npz",           # during an npz write (level 0's ticket mask)
])
def test_lottery_killed_resumes_identical(reference, tmp_path, kill_at):
    ref = reference("lottery", LOTTERY)
    resumed = killed_then_resumed(tmp_path, LOTTERY, kill_at)
    assert "resuming" in resumed.stdout
    assert_same_outputs(ref, tmp_path)


def test_lottery_rewind_k_killed_at_the_step_k_checkpoint(reference, tmp_path):
    ref = reference("rewind_k", REWIND_K)
    killed_then_resumed(tmp_path, REWIND_K, "checkpoint:levels/0:100")
    assert_same_outputs(ref, tmp_path)


def test_damaged_latest_checkpoint_falls_back(reference, tmp_path):
    ref = reference("lottery", LOTTERY)

    def damage(workdir):  # truncate every array file of the newest checkpoint of level 1
        latest = max(glob.glob(os.path.join(workdir, "levels", "1", "checkpoints", "[0-9]*")),
                     key=lambda p: int(os.path.basename(p)))
        for path in glob.glob(os.path.join(latest, "state", "**", "*"), recursive=True):
            if os.path.isfile(path) and os.path.getsize(path) > 100:
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
    resumed = killed_then_resumed(tmp_path, LOTTERY, "checkpoint:levels/1:200", between=damage)
    warnings = [l for l in resumed.stderr.splitlines() if "damaged" in l]
    assert len(warnings) == 1 and "level 1 checkpoint at step 200" in warnings[0], resumed.stderr
    assert_same_outputs(ref, tmp_path)


def test_partial_metrics_line_is_dropped(reference, tmp_path):
    ref = reference("lottery", LOTTERY)

    def cut(workdir):
        with open(os.path.join(workdir, "levels", "1", "metrics.jsonl"), "a") as f:
            f.write('{"step": 200, "train_lo')
    resumed = killed_then_resumed(tmp_path, LOTTERY, "metrics:levels/1:150", between=cut)
    assert "dropped 1 unreadable line" in resumed.stderr
    assert_same_outputs(ref, tmp_path)


@pytest.mark.parametrize("kill_at", ["metrics:scores:150", "metrics:fractions/0.5:150"])
def test_diet_killed_resumes_identical(reference, tmp_path, kill_at):
    ref = reference("diet", DIET)
    killed_then_resumed(tmp_path, DIET, kill_at)
    assert_same_outputs(ref, tmp_path)


def test_unit_search_killed_inside_a_sparsity_resumes_identical(reference, tmp_path):
    ref = reference("unit_search", UNIT)
    killed_then_resumed(tmp_path, UNIT, "metrics:sparsity/0.5:150")
    assert_same_outputs(ref, tmp_path)


def test_ctrl_c_says_where_and_resumes(reference, tmp_path):
    ref = reference("lottery", LOTTERY)
    proc = subprocess.Popen([sys.executable, "main.py", "--workdir", str(tmp_path), *LOTTERY, "--progress"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # one line per evaluation: interrupt after the first
        if line.startswith("level 0: step 50/"):
            proc.send_signal(signal.SIGINT)
            break
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130
    lines = err.strip().splitlines()
    match = re.fullmatch(r"interrupted at level 0 step (\d+); run the same command to resume", lines[0])
    assert len(lines) == 1 and match, err
    step = match.group(1)  # the evaluation in progress when the signal came (50) or the next (100)
    assert step in ("50", "100") and os.path.isdir(tmp_path / "levels" / "0" / "checkpoints" / step)
    again = main_py(tmp_path, LOTTERY)
    assert again.returncode == 0 and f"resuming level 0 from step {step}" in again.stdout
    assert_same_outputs(ref, tmp_path)
