"""The run mechanism's pieces: atomic files, stages, checkpoints, the divergence guard."""
import json
import os

import numpy as np
import pytest

import main as main_py
from lth_jax import files
from lth_jax.experiments import train as train_exp
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
