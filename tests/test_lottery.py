import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from lth_jax import ensemble, masks, npz
from lth_jax.errors import LthError
from lth_jax.experiments import common, lottery
from lth_jax.trainer import Trainer
from lth_jax.stages import Stage
from lth_jax.workdir import RunDir


def tiny(**over):
    c = default.get_config()
    c.data.source.num_samples = 600
    c.data.validation_size = 100
    c.model.widths = (24,)
    c.train.steps = 40
    c.train.batch_size = 50
    c.train.eval_every = 10
    c.train.checkpoint_every = 20
    c.lottery.levels = 2
    c.lottery.seeds = 2
    c.lottery.scope = "layerwise"
    c.lottery.layer_fractions = {"output/kernel": 0.1}
    for k, v in over.items():
        section, key = k.split("__")
        c[section][key] = v
    return c


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    cfg = tiny(lottery__rewind_step=20)
    workdir = str(tmp_path_factory.mktemp("lottery"))
    summary = lottery.run(cfg, workdir, progress=False)
    return cfg, workdir, summary


def leaf_masks(workdir, level, r=0):
    name = "mask.npz" if r == 0 else f"mask_r{r}.npz"
    with np.load(os.path.join(workdir, "levels", str(level), name)) as f:
        return {k: f[k] for k in f.files}


def test_files_table_and_plot(finished):
    _, workdir, summary = finished
    assert [e["level"] for e in summary["levels"]] == [0, 1, 2]
    for level in range(3):
        for f in ("result.json", "mask.npz", "mask_r1.npz", "ticket_final.npz"):
            assert os.path.exists(os.path.join(workdir, "levels", str(level), f))
    assert os.path.exists(os.path.join(workdir, "plots", "lottery.png"))
    assert set(summary["levels"][1]["kinds"]) == {"ticket", "reinit", "random_prune"}
    with np.load(os.path.join(workdir, "levels", "1", "mask.npz")) as f:
        assert f["dense_0/kernel"].dtype == bool


def test_masks_nested_and_densities_follow_schedule(finished):
    _, workdir, _ = finished
    full = {"dense_0/kernel": 40 * 24, "output/kernel": 24 * 10}
    for r in (0, 1):
        prev = leaf_masks(workdir, 0, r)
        for level in (1, 2):
            cur = leaf_masks(workdir, level, r)
            for name in cur:
                assert not np.any(cur[name] & ~prev[name]), (level, name)
            for name, n0 in full.items():
                p = 0.1 if name.startswith("output") else 0.2
                assert abs(int(cur[name].sum()) - n0 * (1 - p) ** level) <= 1, (level, name)
            assert cur["dense_0/bias"].all()
            prev = cur


def test_controls_share_density_but_differ(finished):
    _, workdir, _ = finished
    result = json.load(open(os.path.join(workdir, "levels", "2", "result.json")))
    m = result["members"]
    for r in (0, 1):
        t, ri, rp = m[f"ticket/{r}"], m[f"reinit/{r}"], m[f"random_prune/{r}"]
        assert t["density_per_leaf"] == ri["density_per_leaf"] == rp["density_per_leaf"]
        losses = (t["final_test_loss"], ri["final_test_loss"], rp["final_test_loss"])
        assert len(set(losses)) == 3, losses  # three different networks


def test_rewind_restores_step_k_weights_on_kept_positions(finished):
    cfg, workdir, _ = finished
    lot = lottery.Lottery(cfg, workdir, progress=False)
    example = lot.init_params(lot.keys["init"])
    rewind = npz.load(os.path.join(workdir, "levels", "0", "rewind.npz"), ensemble.stack([example, example]))
    # The rewind point is the dense run's step-20 weights: retrain replicate 0 alone to step 20.
    alone = common.build(cfg)
    state = alone.init(jax.random.fold_in(lot.keys["init"], 0))
    alone.trainer.reseed((cfg.seed, 0))  # replicate 0's data order
    state = alone.trainer.run(state, 20, 10, lot.keys["augment"], progress=False)
    np.testing.assert_allclose(ensemble.take(rewind["params"], 0)["dense_0"]["kernel"],
                               state.params["dense_0"]["kernel"], rtol=1e-5, atol=1e-6)
    prev_masks = ensemble.stack([masks.load(lot.mask_path(0, r), example["params"]) for r in (0, 1)])
    final = npz.load(os.path.join(workdir, "levels", "0", "ticket_final.npz"),
                     ensemble.stack([example["params"]] * 2))
    stacked, names, _, level_masks = lot.level_members(1, final, prev_masks)
    for r in (0, 1):
        ticket = ensemble.take(stacked, names.index(f"ticket/{r}"))
        assert int(ticket.step) == 20
        kept = np.asarray(ticket.mask["dense_0"]["kernel"])
        w = np.asarray(ticket.params["dense_0"]["kernel"])
        np.testing.assert_array_equal(w[kept], np.asarray(ensemble.take(rewind["params"], r)["dense_0"]["kernel"])[kept])
        assert np.all(w[~kept] == 0)
        reinit = ensemble.take(stacked, names.index(f"reinit/{r}"))
        np.testing.assert_array_equal(reinit.mask["dense_0"]["kernel"], kept)
        assert not np.allclose(np.asarray(reinit.params["dense_0"]["kernel"])[kept], w[kept])
        rand = ensemble.take(stacked, names.index(f"random_prune/{r}"))
        assert not np.array_equal(np.asarray(rand.mask["dense_0"]["kernel"]), kept)
        assert np.asarray(rand.mask["dense_0"]["kernel"]).sum() == kept.sum()


def test_vmapped_members_match_training_each_alone(finished, tmp_path):
    cfg, workdir, _ = finished
    lot = lottery.Lottery(cfg, workdir, progress=False)
    example = lot.init_params(lot.keys["init"])["params"]
    prev = ensemble.stack([masks.load(lot.mask_path(0, r), example) for r in (0, 1)])
    final = npz.load(os.path.join(workdir, "levels", "0", "ticket_final.npz"), ensemble.stack([example] * 2))
    stacked, names, seeds, _ = lot.level_members(1, final, prev)
    stage = Stage(RunDir(str(tmp_path)), "level", "level 1")
    together = lot.train(1, stage, jax.tree_util.tree_map(jnp.copy, stacked), names, seeds)
    alone = common.build(cfg)
    for i in (0, 3, 5):  # ticket/0, reinit/1, random_prune/1
        alone.trainer.reseed(seeds[i])
        st = alone.trainer.run(ensemble.take(stacked, i), cfg.train.steps, 10, lot.keys["augment"], progress=False)
        for a, b in zip(jax.tree_util.tree_leaves(st.params),
                        jax.tree_util.tree_leaves(ensemble.take(together.params, i))):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_resume_after_crash_mid_level(tmp_path, monkeypatch, capsys, finished):
    cfg, _, full = finished
    cfg = tiny(lottery__rewind_step=20, train__checkpoint_every=10)  # same numbers, checkpoints mid-level
    original = Trainer.run_chunk
    calls = {"n": 0}

    def crashing(self, state, stop, key):
        calls["n"] += 1
        if calls["n"] == 6:  # level 1 (steps 20 -> 40), after its checkpoint at step 30
            raise KeyboardInterrupt
        return original(self, state, stop, key)

    monkeypatch.setattr(Trainer, "run_chunk", crashing)
    workdir = str(tmp_path / "crashed")
    with pytest.raises(KeyboardInterrupt):
        lottery.run(cfg, workdir, progress=False)
    assert os.path.exists(os.path.join(workdir, "levels", "0", "result.json"))
    assert not os.path.exists(os.path.join(workdir, "levels", "1", "result.json"))
    monkeypatch.setattr(Trainer, "run_chunk", original)
    resumed = lottery.run(cfg, workdir, progress=False)
    assert "resuming level 1 from step 30" in capsys.readouterr().out
    for a, b in zip(full["levels"], resumed["levels"]):
        for kind in a["kinds"]:
            np.testing.assert_allclose(a["kinds"][kind]["final_test_loss"]["values"],
                                       b["kinds"][kind]["final_test_loss"]["values"], rtol=1e-6)
            assert a["kinds"][kind]["early_stop_step"]["values"] == b["kinds"][kind]["early_stop_step"]["values"]


def test_instability_reports_a_barrier(tmp_path):
    cfg = tiny(lottery__levels=1, lottery__seeds=1, lottery__instability_levels=(0, 1), lottery__instability_points=5,
               lottery__controls=())
    summary = lottery.run(cfg, str(tmp_path / "inst"), progress=False)
    barrier = summary["levels"][1]["instability_barrier"]
    result = json.load(open(tmp_path / "inst" / "levels" / "1" / "result.json"))
    errors = result["instability"]["replicates"][0]["test_error"]
    assert len(errors) == 5 and barrier == pytest.approx(max(errors) - (errors[0] + errors[-1]) / 2)
    assert os.path.exists(tmp_path / "inst" / "plots" / "instability.png")
    assert "instability_barrier" in summary["levels"][0]


@pytest.mark.parametrize("over, message", [
    (dict(lottery__rewind_step=40), "rewind_step 40 must be in"),
    (dict(lottery__levels=-1), "levels must be >= 0"),
    (dict(lottery__fraction=1.0), "fraction must be in (0, 1)"),
    (dict(lottery__fraction=0.0), "fraction must be in (0, 1)"),
    (dict(lottery__controls=("shuffled",)), "unknown lottery control"),
    (dict(lottery__controls=("reinit", "reinit")), "lists a control twice"),
    (dict(lottery__granularity="neurons"), "granularity must be one of weights, units"),
    (dict(lottery__granularity="units", lottery__scope="global"), "set lottery.scope = 'layerwise'"),
    (dict(lottery__granularity="units"), "leave them unset"),  # tiny() sets layer_fractions
    (dict(train__member_block="0"), "train.member_block must be 'auto', 'vmap' or a whole number >= 1"),
    (dict(train__compute_dtype="float16"), "train.compute_dtype must be float32 or bfloat16, got 'float16'"),
    (dict(lottery__robustness_severities=(3, 6)), "robustness_severities must be in 1..5, got 6"),
    (dict(lottery__robustness=True, lottery__robustness_corruptions=("contrast",)),
     "robustness_corruptions has 'contrast', which does not apply to inputs of shape (40,)"),
])
def test_bad_lottery_config(tmp_path, over, message):
    with pytest.raises(LthError) as e:
        lottery.run(tiny(**over), str(tmp_path / "bad"), progress=False)
    assert message in str(e.value)
    assert not os.path.exists(tmp_path / "bad")


def test_report_redraws_plots_from_files(finished):
    from lth_jax import report
    _, workdir, _ = finished
    plot = os.path.join(workdir, "plots", "lottery.png")
    os.remove(plot)
    assert report.main([workdir]) == 0
    assert os.path.getsize(plot) > 10_000


def test_finished_run_extends_with_more_levels(tmp_path, finished):
    cfg, _, full = finished
    short = tiny(lottery__rewind_step=20, lottery__levels=1)
    workdir = str(tmp_path / "grow")
    lottery.run(short, workdir, progress=False)
    grown = lottery.run(cfg, workdir, progress=False)  # levels 1 -> 2 continues the finished run
    assert [e["level"] for e in grown["levels"]] == [0, 1, 2]
    np.testing.assert_allclose(grown["levels"][2]["kinds"]["ticket"]["final_test_loss"]["values"],
                               full["levels"][2]["kinds"]["ticket"]["final_test_loss"]["values"], rtol=1e-6)
    other = tiny(lottery__rewind_step=20, lottery__levels=3, lottery__fraction=0.3)
    with pytest.raises(LthError, match="finished run"):
        lottery.run(other, workdir, progress=False)


def test_ap_takes_its_share_of_the_budget_from_negative_weights(finished, tmp_path):
    _, workdir, _ = finished
    ap_cfg = tiny(lottery__rewind_step=20, lottery__ap_fraction=0.25, lottery__levels=1, lottery__seeds=1)
    ap_dir = str(tmp_path / "ap")
    lottery.run(ap_cfg, ap_dir, progress=False)
    plain, with_ap = leaf_masks(workdir, 1), leaf_masks(ap_dir, 1)  # replicate 0 of both: same level 0
    kernels = [n for n in plain if n.endswith("kernel")]
    assert sum(int(with_ap[n].sum()) for n in kernels) == sum(int(plain[n].sum()) for n in kernels)  # same budget
    example = lottery.Lottery(ap_cfg, str(tmp_path / "x"), progress=False).init_params(jax.random.key(0))["params"]
    final = masks.named_leaves(ensemble.take(npz.load(os.path.join(ap_dir, "levels", "0", "ticket_final.npz"),
                                                      ensemble.stack([example])), 0))
    by_ap = {n: plain[n] & ~with_ap[n] for n in kernels}  # kept by magnitude alone, removed with AP
    assert sum(int(v.sum()) for v in by_ap.values()) > 0
    assert all(np.all(np.asarray(final[n])[by_ap[n]] < 0) for n in kernels)
    with pytest.raises(LthError, match="ap_fraction must be in"):
        lottery.check_config(tiny(lottery__ap_fraction=1.0))


def test_dead_neuron_rates_logged_and_drawn(tmp_path):
    cfg = tiny(train__log_activations=True, lottery__levels=1, lottery__seeds=1)
    workdir = str(tmp_path / "dnr")
    summary = lottery.run(cfg, workdir, progress=False)
    first = json.loads(open(os.path.join(workdir, "levels", "1", "metrics.jsonl")).readline())
    assert len(first["dead_dynamic"]) == 3 and all(0 < v < 1 for v in first["dead_dynamic"])  # 3 members
    ticket = summary["levels"][1]["kinds"]["ticket"]
    assert 0 < ticket["final_dead_dynamic"]["mean"] < 1 and 0 <= ticket["final_dead_static"]["mean"] < 1
    assert os.path.exists(os.path.join(workdir, "plots", "dead_neurons.png"))


def test_structured_imp_removes_whole_units_and_its_controls(tmp_path, capsys):
    cfg = tiny(lottery__granularity="units", lottery__layer_fractions={}, lottery__seeds=1,
               lottery__controls=("random_prune", "shuffle"))
    workdir = str(tmp_path / "units")
    summary = lottery.run(cfg, workdir, progress=False)
    assert "% units" in capsys.readouterr().out
    # 24 hidden units: level 1 removes floor(0.2 * 24 + 0.5) = 5, level 2 removes floor(0.2 * 19 + 0.5) = 4
    assert [e["kinds"]["ticket"]["unit_density"]["mean"] for e in summary["levels"][1:]] == [19 / 24, 15 / 24]
    names = [f"{k}/0" for k in ("ticket", "random_prune", "shuffle")]
    ticket = leaf_masks(workdir, 2)
    hidden, out = ticket["dense_0/kernel"], ticket["output/kernel"]
    kept = hidden.all(0)
    assert int(kept.sum()) == 15 and np.array_equal(hidden, np.broadcast_to(kept, hidden.shape))  # whole columns
    assert np.array_equal(out, np.broadcast_to(kept[:, None], out.shape))  # and the rows that read them
    result = json.load(open(os.path.join(workdir, "levels", "2", "result.json")))
    dens = {n: result["members"][n]["density_per_leaf"] for n in names}
    assert dens["random_prune/0"] == dens["ticket/0"] == dens["shuffle/0"]  # same per-layer counts
    assert result["members"]["random_prune/0"]["unit_density"] == 15 / 24  # random units: still structured
    assert result["members"]["shuffle/0"]["unit_density"] > 15 / 24  # shuffled weights: scattered over units
