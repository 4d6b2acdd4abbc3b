"""python -m lth_jax.robustness on a finished lottery run."""
import json
import os

import numpy as np
import pytest

from configs import default
from lth_jax import robustness
from lth_jax.experiments import lottery


def small_lottery(levels: int, controls: tuple):
    """The default job shrunk to seconds: 2 replicates, 200 steps per level."""
    c = default.get_config()
    c.data.source.num_samples = 800
    c.data.validation_size = 100
    c.model.widths = (32,)
    c.train.steps, c.train.eval_every, c.train.checkpoint_every = 200, 100, 100
    c.lottery.levels, c.lottery.seeds, c.lottery.controls = levels, 2, controls
    return c


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    c = small_lottery(2, ())
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
    assert all(g["logit_rebuild_error"] < 1e-5 for c in out["geometry"].values() for g in c.values())
    sep = geo["clean"]["theta_y_separation"]
    assert sep["correct"] + sep["misclassified"] == out["examples"] and 0 <= sep["auroc"] <= 1
    for name in ("robustness.png", "geometry.png"):
        assert os.path.getsize(os.path.join(finished, "plots", name)) > 10_000
    printed = capsys.readouterr().out
    assert "% remaining" in printed and "within the 1e-05 check" in printed


def test_bad_inputs_are_one_line_errors(finished, tmp_path, capsys):
    assert robustness.main([finished, "--corruptions", "contrast"]) == 2
    assert "does not apply to inputs of shape" in capsys.readouterr().err
    assert robustness.main([finished, "--severities", "0"]) == 2
    assert "severities must be in 1..5" in capsys.readouterr().err
    assert robustness.main([str(tmp_path)]) == 2
    assert "not a lth_jax workdir" in capsys.readouterr().err


def test_in_run_option_covers_the_controls(tmp_path):
    c = small_lottery(1, ("reinit", "shuffle"))
    c.lottery.robustness, c.lottery.robustness_severities = True, (2,)
    c.lottery.robustness_corruptions, c.lottery.robustness_examples = ("signal_noise",), 150
    lottery.run(c, str(tmp_path), progress=False)
    out = json.load(open(tmp_path / "robustness.json"))
    assert [(e["level"], e["kind"]) for e in out["levels"]] == [(0, "dense"), (1, "ticket"), (1, "reinit"),
                                                                 (1, "shuffle")]
    assert all(len(e["clean"]) == 2 and list(e["corrupted"]) == ["signal_noise:2"] for e in out["levels"])
    # the kept weights are the members the level trained: on the whole test set they score what it recorded
    result = json.load(open(tmp_path / "levels" / "1" / "result.json"))
    full = robustness.evaluate(str(tmp_path), (2,), ["signal_noise"], examples=10_000)
    for e in full["levels"][1:]:
        recorded = [result["members"][f"{e['kind']}/{r}"]["final_test_accuracy"] for r in (0, 1)]
        np.testing.assert_allclose(e["clean"], recorded, atol=1e-6)
    assert os.path.getsize(tmp_path / "plots" / "robustness.png") > 10_000


def test_kept_batch_stats_are_used_and_their_absence_refused(tmp_path):
    from lth_jax import ensemble, npz
    from lth_jax.workdir import RunDir

    class Cfg:  # what _networks reads of a config
        class model:
            name = "resnet20"

        class lottery:
            seeds = 1
    example = {"params": {"w": np.ones(3, np.float32)}, "batch_stats": {"mean": np.zeros(3, np.float32)}}
    result = {"members": {"ticket/0": {}, "reinit/0": {}}}
    (tmp_path / "levels" / "1").mkdir(parents=True)
    with pytest.raises(robustness.LthError, match="keep_members=True"):
        robustness._networks(RunDir(str(tmp_path)), 1, result, example, Cfg)
    kept = [{"params": {"w": np.full(3, i, np.float32)}, "batch_stats": {"mean": np.full(3, 10 + i, np.float32)}}
            for i in (1, 2)]
    npz.save(str(tmp_path / "levels" / "1" / "final.npz"), ensemble.stack(kept))
    nets = robustness._networks(RunDir(str(tmp_path)), 1, result, example, Cfg)
    assert list(nets) == ["ticket", "reinit"]
    np.testing.assert_array_equal(nets["reinit"][0]["batch_stats"]["mean"], [12, 12, 12])
    np.testing.assert_array_equal(nets["ticket"][0]["params"]["w"], [1, 1, 1])


def test_theta_separation_matches_pairwise_counts():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(1.0, 0.2, 60), rng.normal(1.3, 0.2, 25)])
    correct = np.arange(85) < 60
    sep = robustness.separation(values, correct)
    wrong, right = values[~correct], values[correct]
    pairs = (wrong[:, None] > right[None, :]).mean() + 0.5 * (wrong[:, None] == right[None, :]).mean()
    assert sep["auroc"] == pytest.approx(pairs, abs=1e-12) and sep["auroc"] > 0.75
    pooled = np.sqrt((59 * right.var(ddof=1) + 24 * wrong.var(ddof=1)) / 83)
    assert sep["cohens_d"] == pytest.approx((wrong.mean() - right.mean()) / pooled)
    assert sep["mann_whitney_p"] < 1e-4 and (sep["correct"], sep["misclassified"]) == (60, 25)
    same = robustness.separation(rng.normal(size=200), np.arange(200) % 2 == 0)
    assert abs(same["auroc"] - 0.5) < 0.1 and same["mann_whitney_p"] > 0.01
    assert robustness.separation(values, np.ones(85, bool)) is None
