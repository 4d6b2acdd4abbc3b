"""experiment = "measures": the grid, the stopping rule, Kendall tau and Psi."""
import copy
import itertools
import json
import os

import numpy as np
import pytest

from configs import measures_mnist1d
from lth_jax.errors import LthError
from lth_jax.experiments import measures, measures_report
from lth_jax.measures import MARGIN_MEASURES


def tiny(**over):
    c = measures_mnist1d.get_config()
    c.data.source.num_samples = 800
    c.data.validation_size = 100
    c.train.steps, c.train.eval_every, c.train.checkpoint_every = 100, 50, 50
    c.train.batch_size = 50
    c.measures.widths = ((16,),)
    c.measures.learning_rates = (1e-3, 1e-2)
    c.measures.weight_decays = (0.0,)
    c.measures.seeds = 1
    c.measures.label_noise = (0.0, 0.3)
    c.measures.samples = 2
    for k, v in over.items():
        section, key = k.split("__")
        c[section][key] = v
    return c


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("measures"))
    return workdir, measures.run(tiny(), workdir, progress=False)


def test_grid_ranking_and_noise_table(finished, capsys):
    """100 steps reach no member's stopping loss: all four are listed, none is
    ranked; a member whose margin is <= 0 has its margin measures null."""
    workdir, summary = finished
    assert summary["members"] == 4 and summary["clean_members"] == 2 and summary["ranked_members"] == 0
    names = set(summary["ranking"])
    assert {"pacbayes_mag_flatness", "log_prod_of_spec_over_margin", "path_norm", "fro_dist", "params"} <= names
    assert all(r["tau"] is None for r in summary["ranking"].values())
    assert sorted(m["id"] for m in summary["not_converged"]) == sorted(
        f"a0_n{n}/lr{lr}_wd0/0" for n in ("0", "0.3") for lr in ("0.001", "0.01"))
    assert set(summary["label_noise"]) == {"0", "0.3"}
    not_positive = []
    for g in ("a0_n0", "a0_n0.3"):
        result = json.load(open(os.path.join(workdir, "groups", g, "result.json")))
        assert len(result["members"]) == 2
        for name, m in result["members"].items():
            assert 0 < m["train_accuracy"] <= 1 and m["gap"] == pytest.approx(m["train_accuracy"] - m["test_accuracy"])
            undefined = {k for k, v in m["measures"].items() if v is None}
            assert undefined == (set(MARGIN_MEASURES) if m["raw"]["margin"] <= 0 else set())
            assert all(np.isfinite(v) for k, v in m["measures"].items() if k not in undefined)
            not_positive += [f"{g}/{name}"] if undefined else []
    assert summary["margin_not_positive"] == not_positive and not_positive  # 16 units, 100 steps, 30% noise
    assert os.path.exists(os.path.join(workdir, "plots", "measures.png"))
    assert os.path.exists(os.path.join(workdir, "plots", "label_noise.png"))
    measures_report.print_summary(summary)
    out = capsys.readouterr().out
    assert "Kendall tau" in out and "4 members did not reach the stopping loss" in out
    assert "0 of 2 clean members reached the stopping loss" in out


def test_a_frozen_member_stops_changing_and_the_others_train_on():
    import jax
    import jax.numpy as jnp

    from lth_jax import ensemble, models
    from lth_jax.train import Steps, create_state, init_variables
    model = models.get("mlp", num_classes=3, widths=(8,))
    tx = measures.make_tx("adamw", 0.9)
    states = []
    for i, (lr, wd) in enumerate([(1e-2, 1e-4), (1e-2, 0.0)]):
        v = init_variables(model, jax.random.key(i), (4,))
        states.append(measures.with_hyperparams(create_state(v["params"], {}, tx), lr, wd))
    state = measures.Measures.freeze(ensemble.stack(states), {0: 50})
    np.testing.assert_allclose(np.asarray(state.opt_state.hyperparams["learning_rate"]), [0.0, 1e-2], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(state.opt_state.hyperparams["weight_decay"]), [1e-4, 0.0])
    xs = jax.random.normal(jax.random.key(5), (3, 16, 4))
    ys = jnp.zeros((3, 16), jnp.int32)
    after, _ = jax.jit(Steps(model, tx, members=True).scan_batches)(state, xs, ys, jax.random.key(6))
    moved = [float(max(jnp.max(jnp.abs(a - b)) for a, b in zip(jax.tree_util.tree_leaves(ensemble.take(after.params, i)),
                                                                 jax.tree_util.tree_leaves(ensemble.take(state.params, i)))))
             for i in range(2)]
    assert moved[0] == 0.0 and moved[1] > 1e-4


def test_stop_steps_are_recorded(finished):
    workdir, _ = finished
    result = json.load(open(os.path.join(workdir, "groups", "a0_n0", "result.json")))
    for m in result["members"].values():
        assert m["stop_step"] == 100 and not m["reached_stop_loss"]  # 0.01 is out of reach in 100 steps


def test_lottery_levels_and_diet_fractions_are_grid_axes(tmp_path):
    """Members at every IMP level (0.2 of the remaining weights per round,
    rewound to init) and on half of the training set, ranked along both axes."""
    c = tiny(measures__lottery_levels=2, measures__diet_fractions=(0.5,), measures__label_noise=(0.0,),
             measures__learning_rates=(1e-2,), measures__seeds=2, measures__stop_loss=2.0)  # reached: ranked
    summary = measures.run(c, str(tmp_path), progress=False)
    groups = sorted(os.listdir(tmp_path / "groups"))
    assert groups == [f"a0_n0_f{f}_L{level}" for f in ("0.5", "1") for level in range(3)]
    n_train = json.load(open(tmp_path / "groups" / "a0_n0_f1_L0" / "result.json"))["examples"]
    final = np.load(tmp_path / "groups" / "a0_n0_f0.5_L1" / "final.npz")
    for g in groups:
        result = json.load(open(tmp_path / "groups" / g / "result.json"))
        f, level = result["diet_fraction"], result["lottery_level"]
        assert result["examples"] == round(f * n_train)
        assert ("final.npz" in os.listdir(tmp_path / "groups" / g)) == (level < 2)
        for m in result["members"].values():
            assert (m["diet_fraction"], m["lottery_level"]) == (f, level)
            assert m["density"] == pytest.approx(0.8 ** level, abs=0.01)
            assert m["raw"]["params"] == round(m["density"] * (40 * 16 + 16 * 10))  # alive kernel entries
    mask1 = {k: final[k] for k in final.files if k.startswith("mask/")}
    assert all(v.dtype == bool for v in mask1.values()) and sum(v.sum() for v in mask1.values()) > 0
    assert summary["clean_members"] == summary["ranked_members"] == 12
    for axis in ("diet_fraction", "lottery_level"):
        assert summary["ranking"]["fro_dist"][axis] is not None, axis
    assert "tau | lottery_level" in measures_report.table_rows(summary)[0]


def test_a_scored_diet_keeps_the_hardest_examples(tmp_path):
    from lth_jax.experiments import common, diet
    c = tiny(measures__diet_fractions=(0.25,), measures__diet_selection="el2n:hardest",
             measures__diet_scores=str(tmp_path / "scores.npz"))
    ds = common.load_data(c, c.seed)
    score = np.random.default_rng(0).random(len(ds.y_train))
    diet.save_scores(c.measures.diet_scores, ds.train_indices, {"el2n": score[None]}, ds.fingerprint())
    kept = measures.Measures(c, str(tmp_path / "run"), progress=False).subset(0.25)
    np.testing.assert_array_equal(kept, np.sort(np.argsort(-score)[:round(0.25 * len(score))]))
    c.measures.diet_selection = "grand:hardest"
    with pytest.raises(LthError, match="has no 'grand' scores; it has: el2n"):
        measures.Measures(c, str(tmp_path / "run"), progress=False)


def grid_members(reached=lambda a, lr, wd, seed: True):
    """Results of two groups (architectures) of 8 members, as `Measures.level` makes them."""
    results = []
    for a in range(2):
        members = {}
        for lr, wd, seed in itertools.product((1e-3, 1e-2), (0.0, 1e-4), range(2)):
            gap = 0.1 * a + lr * 5 + wd * 100 + 0.001 * seed
            members[f"lr{lr:g}_wd{wd:g}/{seed}"] = {
                "architecture": a, "learning_rate": lr, "weight_decay": wd, "seed": seed, "label_noise": 0.0,
                "gap": gap, "test_accuracy": 0.5, "train_accuracy": 0.5 + gap, "stop_step": 100, "train_loss": 0.01,
                "reached_stop_loss": reached(a, lr, wd, seed), "group": f"a{a}_n0", "raw": {"margin": 1.0},
                "measures": {"up": gap, "down": -gap, "lr": lr, "constant": 7.0}}
        results.append({"members": members})
    return results


def test_kendall_tau_is_tau_a():
    """Jiang et al.'s eq. 3: (concordant - discordant pairs) / all pairs, i.e.
    scipy's tau-b times sqrt((n0 - ties in x)(n0 - ties in y)) / n0."""
    from scipy.stats import kendalltau
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, 30).astype(float), rng.integers(0, 5, 30).astype(float)
    n0 = 30 * 29 / 2
    ties = [sum(np.sum(v == u) * (np.sum(v == u) - 1) / 2 for u in np.unique(v)) for v in (x, y)]
    want = kendalltau(x, y)[0] * np.sqrt((n0 - ties[0]) * (n0 - ties[1])) / n0
    assert measures_report.kendall_tau(x, y) == pytest.approx(want)
    assert measures_report.kendall_tau(np.ones(5), np.arange(5.0)) == 0.0
    assert measures_report.kendall_tau([1.0, np.nan, 3.0], [1.0, 2.0, 0.0]) == -1.0  # the NaN member left out
    assert measures_report.kendall_tau([1.0, np.nan], [1.0, 2.0]) is None


def test_tau_and_psi_on_a_known_grid():
    summary = measures_report.summarize(grid_members(), ["a", "b"], 0.0)
    assert summary["ranking"]["up"]["tau"] == pytest.approx(1.0) and summary["ranking"]["up"]["psi"] == pytest.approx(1.0)
    assert summary["ranking"]["down"]["psi"] == pytest.approx(-1.0)
    assert summary["not_converged"] == [] and summary["ranked_members"] == 16


def test_a_constant_measure_has_tau_0_and_counts_in_psi():
    """Jiang et al.'s tau (eq. 3, the sum of sign products over pairs; the
    reference's sign_error scores a tie as neither agreement nor disagreement):
    a measure constant over a set has tau 0 there, and that set's axis counts
    in Psi. The "lr" measure follows the gap along the learning rate only."""
    r = measures_report.summarize(grid_members(), ["a", "b"], 0.0)["ranking"]
    assert r["constant"]["tau"] == 0.0 and r["constant"]["psi"] == 0.0
    lr_only = r["lr"]
    assert lr_only["learning_rate"] == pytest.approx(1.0)
    assert lr_only["architecture"] == 0.0 and lr_only["weight_decay"] == 0.0
    assert lr_only["psi"] == pytest.approx(1 / 3)


def test_members_that_did_not_reach_the_stopping_loss_are_listed_not_ranked():
    results = grid_members(reached=lambda a, lr, wd, seed: not (a == 1 and lr == 1e-3))  # 4 of 16 did not
    bad = results[1]["members"]["lr0.001_wd0/0"]
    bad["measures"]["up"] = -1.0  # would spoil tau = 1 if it were ranked
    bad["raw"]["margin"] = -0.5
    summary = measures_report.summarize(results, ["a", "b"], 0.0)
    assert summary["ranked_members"] == 12 and summary["clean_members"] == 16
    assert summary["ranking"]["up"]["tau"] == pytest.approx(1.0)
    assert summary["ranking"]["up"]["learning_rate"] == pytest.approx(1.0)  # sets with one member left: no pair
    assert sorted(m["id"] for m in summary["not_converged"]) == [
        "a1_n0/lr0.001_wd0.0001/0", "a1_n0/lr0.001_wd0.0001/1", "a1_n0/lr0.001_wd0/0", "a1_n0/lr0.001_wd0/1"]
    assert summary["margin_not_positive"] == ["a1_n0/lr0.001_wd0/0"]
    assert summary["label_noise"]["0"]["reached_stop_loss"] == 12
    assert summary["gap"]["mean"] == pytest.approx(np.mean([m["gap"] for r in results for m in r["members"].values()
                                                            if m["reached_stop_loss"]]))


def test_noisy_minus_clean_is_paired_by_grid_point():
    """The label-noise comparison is a paired difference with its spread, not two bare means."""
    clean = grid_members()
    noisy = copy.deepcopy(clean)
    for r in noisy:
        for name, m in r["members"].items():
            m["label_noise"], m["group"] = 0.3, m["group"].replace("n0", "n0.3")
            m["measures"]["up"] += 0.5 + 0.01 * m["seed"]  # +0.50 for seed 0, +0.51 for seed 1
            m["test_accuracy"] = 0.4
    noisy[0]["members"]["lr0.01_wd0/1"]["reached_stop_loss"] = False  # its clean partner goes unpaired
    summary = measures_report.summarize(clean + noisy, ["a", "b"], 0.0)
    d = summary["label_noise"]["0.3"]["minus_clean"]
    assert d["up"]["n"] == 15 and d["up"]["mean"] == pytest.approx((8 * 0.50 + 7 * 0.51) / 15)
    assert d["up"]["std"] == pytest.approx(np.std([0.50] * 8 + [0.51] * 7, ddof=1))
    assert d["constant"]["mean"] == 0.0 and d["test_error"]["mean"] == pytest.approx(0.1)
    rows = {r[""]: r for r in measures_report.noise_rows(summary)}
    assert rows["up"]["noise 0.3 - clean"].startswith("+0.5047 ± 0.0052 (n=15, p=")


@pytest.mark.parametrize("over, message", [
    (dict(optimizer__name="nesterov"), "trains with one of sgd, momentum, adam, adamw"),
    (dict(measures__label_noise=(0.2,)), "including 0"),
    (dict(measures__learning_rates=(1e-3, 1e-3)), "lists a value twice"),
    (dict(measures__models=("conv2",)), "not both"),
    (dict(measures__learning_rates=(1e-3,), measures__label_noise=(0.0,)), "at least 2 clean members"),
    (dict(model__name="lenet_300_100"), "sets the hidden widths of model 'mlp'"),
    (dict(measures__stop_loss=0.0), "stop_loss must be > 0"),
    (dict(measures__lottery_levels=-1), "lottery_levels (IMP rounds after the dense networks) must be an integer"),
    (dict(measures__lottery_levels=1, lottery__fraction=1.0), "lottery.fraction (the share each measures"),
    (dict(measures__diet_fractions=(1.0,)), "diet_fractions are kept shares of the training set in (0, 1)"),
    (dict(measures__diet_fractions=(0.5,), measures__diet_selection="el2n:hardest"), "give measures.diet_scores"),
    (dict(measures__diet_selection="el2n"), "must be 'SCORE:METHOD'"),
])
def test_bad_config(tmp_path, over, message):
    with pytest.raises(LthError) as e:
        measures.run(tiny(**over), str(tmp_path / "bad"), progress=False)
    assert message in str(e.value)
    assert not os.path.exists(tmp_path / "bad")
