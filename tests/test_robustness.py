"""python -m lth_jax.robustness on a finished lottery run."""
import json
import os

import numpy as np
import pytest

from configs import default
from lth_jax import robustness
from lth_jax.experiments import lottery


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    c = default.get_config()
    c.data.source.num_samples = 800
    c.data.validation_size = 100
    c.model.widths = (32,)
    c.train.steps, c.train.eval_every, c.train.checkpoint_every = 200, 100, 100
    c.lottery.levels, c.lottery.seeds, c.lottery.controls = 2, 2, ()
    workdir = str(tmp_path_factory.mktemp("lottery"))
    lottery.run(c, workdir, progress=False)
    return workdir


def test_corrupted_accuracy_per_level_and_geometry(finished, capsys):
    assert robustness.main([finished, "--severities", "1,5", "--examples", "300"]) == 0
    out = json.load(open(os.path.join(finished, "robustness.json")))
    assert out["corruptions"] == ["signal_noise", "signal_shift", "signal_scale"] and 100 <= out["examples"] <= 300
    assert [e["kind"] for e in out["levels"]] == ["dense", "ticket", "ticket"]
    for e in out["levels"]:
        assert len(e["clean"]) == 2 and set(e["corrupted"]) == {f"{c}:{s}" for c in out["corruptions"] for s in (1, 5)}
        assert all(0 <= a <= 1 for v in e["corrupted"].values() for a in v)
    clean = np.mean([np.mean(e["clean"]) for e in out["levels"]])
    noisy = np.mean([np.mean(e["corrupted"]["signal_noise:5"]) for e in out["levels"]])
    assert noisy < clean - 0.05, (clean, noisy)  # noise of std 0.8 on standardised signals hurts
    geo = out["geometry"]["dense"]
    assert len(geo["clean"]["h_norm"]) == out["examples"] and 0 < geo["clean"]["theta_y_mean"] < np.pi
    for name in ("robustness.png", "geometry.png"):
        assert os.path.getsize(os.path.join(finished, "plots", name)) > 10_000
    assert "% remaining" in capsys.readouterr().out


def test_bad_inputs_are_one_line_errors(finished, tmp_path, capsys):
    assert robustness.main([finished, "--corruptions", "contrast"]) == 2
    assert "does not apply to inputs of shape" in capsys.readouterr().err
    assert robustness.main([finished, "--severities", "0"]) == 2
    assert "severities must be in 1..5" in capsys.readouterr().err
    assert robustness.main([str(tmp_path)]) == 2
    assert "not a lth_jax workdir" in capsys.readouterr().err
