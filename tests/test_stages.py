"""The run mechanism's pieces: atomic files, stages, checkpoints, the divergence guard."""
import json
import os
import signal
import stat
import sys
import threading

import numpy as np
import pytest

import main as main_py
from lth_jax import files
from lth_jax.checkpoint import Checkpointer
from lth_jax.experiments import train as train_exp
from lth_jax.stages import Interrupted
from lth_jax.trainer import Diverged, Guard, Trainer
from test_run import small_config


def test_json_has_no_bare_nan_and_reads_back(tmp_path):
    path = str(tmp_path / "a.json")
    files.write_json(path, {"x": np.float32("nan"), "y": [1.5, float("inf")], "z": np.arange(2)})
    text = open(path).read()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"x": None, "y": [1.5, None], "z": [0, 1]}


def test_npz_bytes_do_not_depend_on_the_clock(tmp_path, monkeypatch):
    arrays = {"a": np.arange(5.0), "b": np.ones((2, 2), bool)}
    first = files.npz_bytes(arrays)
    import time
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0)
    assert files.npz_bytes(arrays) == first
    files.write_npz(str(tmp_path / "x.npz"), arrays)
    back = files.read_npz(str(tmp_path / "x.npz"))
    np.testing.assert_array_equal(back["a"], arrays["a"])
    assert os.listdir(tmp_path) == ["x.npz"]  # no temporary file left


def test_jsonl_drops_a_partial_last_line(tmp_path, capsys):
    path = str(tmp_path / "m.jsonl")
    files.append_jsonl(path, {"step": 1, "loss": float("nan")})
    with open(path, "a") as f:
        f.write('{"step": 2, "lo')
    assert files.read_jsonl(path) == [{"step": 1, "loss": None}]
    assert "dropped 1 unreadable line" in capsys.readouterr().err


def test_guard_bounds_growth_against_the_first_step():
    g = Guard()
    g.check(0, np.array([2.0, 1.0, 0.5]))
    assert g.reference == 2.0
    g.check(3, np.array([1999.0]))
    with pytest.raises(Diverged, match="over 1000 x the first step's 2"):
        g.check(4, np.array([2001.0]))
    with pytest.raises(Diverged, match="not finite"):
        Guard().check(0, np.array([1.0, np.nan]))
    members = Guard()
    members.check(0, np.array([[2.0, 0.1]]))  # per member; a small first loss is bounded by 1000 x 1
    with pytest.raises(Diverged):
        members.check(1, np.array([[1.0, 1001.0]]))


def test_divergence_names_the_last_checkpoint_with_a_finite_validation_loss(tmp_path, monkeypatch):
    original = Trainer.run_chunk

    def blows_up(self, state, stop, key):
        state, metrics = original(self, state, stop, key)
        if stop > 40:
            metrics = {**metrics, "loss": metrics["loss"] * np.nan}
        return state, metrics
    monkeypatch.setattr(Trainer, "run_chunk", blows_up)
    with pytest.raises(Diverged) as e:
        train_exp.run(small_config(), str(tmp_path / "run"), progress=False)
    assert "after step 40" in str(e.value)
    assert f"the last checkpoint with a finite validation loss is {tmp_path}/run/checkpoints/40)" in str(e.value)


def test_huge_learning_rate_exits_3_with_one_line(tmp_path, capsys):
    args = ["main.py", "--config=configs/train_mnist1d.py", "--workdir", str(tmp_path / "run"),
            "--config.optimizer.learning_rate=1e6", "--config.train.steps=100", "--config.train.eval_every=50",
            "--config.train.checkpoint_every=50", "--config.data.source.num_samples=1000", "--noprogress"]
    assert main_py.main(args) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: training diverged after step 0 (the training loss reached")
    assert "has no checkpoint with a finite validation loss to go back to" in err[0]


def test_a_stage_with_every_checkpoint_damaged_starts_over(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    cfg = small_config()
    full = train_exp.run(cfg, workdir, progress=False)
    os.remove(os.path.join(workdir, "summary.json"))
    for step in os.listdir(os.path.join(workdir, "checkpoints")):
        for folder, _, names in os.walk(os.path.join(workdir, "checkpoints", step)):
            for name in names:
                open(os.path.join(folder, name), "w").close()  # every file emptied
    again = train_exp.run(cfg, workdir, progress=False)
    err = capsys.readouterr().err
    assert err.count("is damaged") == 2 and "resuming" not in err
    assert again["final"] == full["final"]
    assert len(os.listdir(os.path.join(workdir, "damaged"))) == 2


def test_a_ctrl_c_after_the_last_evaluation_still_stops_the_run(tmp_path, monkeypatch):
    """Ctrl-C between a stage's last evaluation and the end of its training was
    swallowed: the run went on to the end and exited 0. It stops there now,
    the last evaluation checkpointed, and the same call finishes the run."""
    original = Trainer.run

    def interrupted_at_the_end(self, *args, **kw):
        state = original(self, *args, **kw)
        os.kill(os.getpid(), signal.SIGINT)  # the stage's Ctrl-C handler asks to stop
        return state
    monkeypatch.setattr(Trainer, "run", interrupted_at_the_end)
    workdir = str(tmp_path / "run")
    with pytest.raises(Interrupted, match="interrupted at training step 60"):
        train_exp.run(small_config(), workdir, progress=False)
    assert not os.path.exists(os.path.join(workdir, "summary.json"))
    monkeypatch.setattr(Trainer, "run", original)
    assert train_exp.run(small_config(), workdir, progress=False)["final"]["step"] == 60


def test_an_empty_manifest_in_the_newest_checkpoint_is_one_warning(tmp_path, capsys, monkeypatch):
    """Orbax's reading threads print tracebacks for a damaged checkpoint ("Event
    loop is closed"), at times and not always: a failed read here prints one
    from a thread too. Only the warning line is shown, and the run goes on from
    the checkpoint before."""
    workdir = str(tmp_path / "run")
    full = train_exp.run(small_config(), workdir, progress=False)
    os.remove(os.path.join(workdir, "summary.json"))
    open(os.path.join(workdir, "checkpoints", "60", "state", "manifest.ocdbt"), "w").close()
    original = Checkpointer.restore

    def restore(self, like, step=None):
        try:
            return original(self, like, step)
        except Exception:
            said = threading.Thread(target=lambda: print("RuntimeError: Event loop is closed", file=sys.stderr))
            said.start()
            said.join()
            raise
    monkeypatch.setattr(Checkpointer, "restore", restore)
    capsys.readouterr()
    again = train_exp.run(small_config(), workdir, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: training checkpoint at step 60 is damaged"), err
    assert again["final"] == full["final"]


def test_files_get_the_permissions_of_an_ordinary_write(tmp_path):
    """0666 less the umask, like open(): a run's results are readable by others under umask 022."""
    old = os.umask(0o077)
    try:
        files.write_json(str(tmp_path / "private.json"), {})
        os.umask(0o022)
        workdir = tmp_path / "run"
        train_exp.run(small_config(), str(workdir), progress=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "private.json").st_mode) == 0o600
    written = [os.path.join(d, f) for d, _, fs in os.walk(workdir) for f in fs]
    assert {"config.json", "summary.json", "curves.png"} <= {os.path.basename(p) for p in written}
    unreadable = [p for p in written if stat.S_IMODE(os.stat(p).st_mode) & 0o044 != 0o044]
    assert not unreadable, unreadable
