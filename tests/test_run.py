"""Runs through experiments.train and main.py: files, resume, refusals, bad input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import train_mnist1d as default
from lth_jax.errors import LthError
from lth_jax.experiments import train as train_exp
from lth_jax.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config():
    c = default.get_config()
    c.data.source.num_samples = 1000
    c.data.validation_size = 100
    c.model.widths = (32,)
    c.train.steps = 60
    c.train.batch_size = 50
    c.train.eval_every = 10
    c.train.checkpoint_every = 20
    return c


def test_run_writes_files_and_refuses_to_overwrite(tmp_path):
    workdir = str(tmp_path / "run")
    summary = train_exp.run(small_config(), workdir, progress=False)
    for name in ("config.json", "metrics.jsonl", "summary.json", "plots/curves.png"):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tensorboard")))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))[-1] == "60"
    lines = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()
    assert [json.loads(l)["step"] for l in lines] == [10, 20, 30, 40, 50, 60]
    records = [json.loads(l) for l in lines]
    best = min(records, key=lambda r: r["val_loss"])
    assert summary["early_stop"]["step"] == best["step"]
    assert summary["early_stop"]["test_accuracy"] == best["test_accuracy"]
    assert summary["final"]["density"] == 1.0
    with pytest.raises(LthError, match="finished run"):
        train_exp.run(small_config(), workdir, progress=False)
    changed = small_config()
    changed.train.steps = 80
    os.remove(os.path.join(workdir, "summary.json"))
    with pytest.raises(LthError, match="different config"):
        train_exp.run(changed, workdir, progress=False)


def test_interrupted_run_resumes_to_identical_numbers(tmp_path, monkeypatch):
    full = train_exp.run(small_config(), str(tmp_path / "full"), progress=False)

    original = Trainer.run_chunk
    calls = {"n": 0}

    def crashing(self, state, stop, key):
        calls["n"] += 1
        if calls["n"] == 4:  # after step 30; the last checkpoint is at step 20
            raise KeyboardInterrupt
        return original(self, state, stop, key)

    monkeypatch.setattr(Trainer, "run_chunk", crashing)
    workdir = str(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        train_exp.run(small_config(), workdir, progress=False)
    assert not os.path.exists(os.path.join(workdir, "summary.json"))
    monkeypatch.setattr(Trainer, "run_chunk", original)
    resumed = train_exp.run(small_config(), workdir, progress=False)
    for key in ("test_loss", "test_accuracy", "val_loss", "train_loss"):
        np.testing.assert_allclose(resumed["final"][key], full["final"][key], rtol=1e-6)
    a = [json.loads(l) for l in open(tmp_path / "full" / "metrics.jsonl")]
    b = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["step"] for r in b] == [r["step"] for r in a]
    np.testing.assert_allclose([r["val_loss"] for r in b], [r["val_loss"] for r in a], rtol=1e-6)


def test_masked_run_from_file(tmp_path):
    import jax
    from lth_jax import masks, models, pruning
    from lth_jax.train import init_variables
    model = models.get("mlp", num_classes=10, widths=(32,))
    params = init_variables(model, jax.random.key(0), (40,))["params"]
    path = str(tmp_path / "mask.npz")
    masks.save(path, pruning.magnitude(params, masks.ones_like(params), 0.8))
    c = small_config()
    c.mask.path = path
    summary = train_exp.run(c, str(tmp_path / "masked"), progress=False)
    assert summary["final"]["density"] == pytest.approx(0.2, abs=0.01)
    c.model.widths = (16,)
    with pytest.raises(LthError, match="was it saved for another model"):
        train_exp.run(c, str(tmp_path / "bad"), progress=False)
    assert not os.path.exists(tmp_path / "bad")


def run_main(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "main.py", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("override, message", [
    ("--config.model.name=lenet5", "unknown model 'lenet5'; valid names:"),
    ("--config.data.name=svhn", "unknown dataset 'svhn'"),
    ("--config.optimizer.name=lion", "unknown optimizer 'lion'"),
    ("--config.train.batch_size=100000", "larger than the training set"),
    ("--config.nonexistent=1", "the config has no key"),
    ("--config.data.name=mnist", "MNIST needs a directory"),
])
def test_main_bad_input_is_one_line(tmp_path, override, message):
    workdir = str(tmp_path / "w")
    out = run_main("--workdir", workdir, override, "--config.train.steps=5")
    assert out.returncode == 2
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], out.stderr
    assert "Traceback" not in out.stderr
    assert not os.path.exists(os.path.join(workdir, "config.json"))
