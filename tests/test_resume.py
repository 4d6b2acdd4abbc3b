"""A run SIGKILLed at any moment and restarted with the same command ends with
the same files, bit for bit (wall times aside), as a run never interrupted."""
import glob
import os
import re
import signal
import subprocess
import sys
import time


from crash import LOTTERY, REWIND_K, ROOT, assert_same_outputs, killed_at_each, killed_then_resumed, main_py


def test_lottery_killed_three_times_resumes_identical(reference, tmp_path):
    """Killed inside the dense level (rewind to init: the rewind point must not
    move), during an npz write (level 0's ticket mask), then inside a pruned
    level; each time restarted with the same command."""
    ref = reference("lottery", LOTTERY)
    last = killed_at_each(tmp_path, LOTTERY, ["metrics:levels/0:150", "write:mask.npz", "metrics:levels/1:150"])
    assert "resuming" in last.stdout
    assert_same_outputs(ref, tmp_path)


def test_lottery_rewind_k_killed_at_the_step_k_checkpoint_and_in_robustness(reference, tmp_path):
    """Killed at the rewind point's checkpoint, then while the in-run robustness
    evaluation writes its results (every level done, no summary yet)."""
    ref = reference("rewind_k", REWIND_K)
    assert (ref / "robustness.json").exists() and (ref / "levels" / "1" / "final.npz").exists()
    killed_at_each(tmp_path, REWIND_K, ["checkpoint:levels/0:100", "write:robustness.json"])
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


def test_ctrl_c_twice_stops_at_once_in_one_line_and_resumes(tmp_path):
    """The second Ctrl-C comes while the first one's checkpoint is being saved:
    the run ends at once (exit 130, one line, no thread's traceback) and the
    same command finishes it."""
    args = ["--config=configs/train_mnist1d.py", "--config.train.steps=300", "--config.train.eval_every=50",
            "--config.train.checkpoint_every=300", "--config.data.source.num_samples=1000"]
    proc = subprocess.Popen([sys.executable, "main.py", "--workdir", str(tmp_path), *args, "--progress"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("train: step 100/"):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            break
    _, err = proc.communicate(timeout=300)
    lines = err.strip().splitlines()
    # 130, or killed by the SIGINT itself when it comes at the very end of the interpreter's exit
    assert proc.returncode in (130, -signal.SIGINT) and len(lines) == 1, err[-3000:]
    assert re.fullmatch(r"interrupted (at|during) training.*; run the same command to resume", lines[0]), lines
    again = main_py(tmp_path, args + ["--noprogress"])
    assert again.returncode == 0, again.stderr[-3000:]
