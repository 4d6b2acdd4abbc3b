"""experiment = "measures": the grid, the stopping rule, Kendall tau and Psi."""
import itertools
import json
import os

import numpy as np
import pytest

from configs import measures_mnist1d
from lth_jax.errors import LthError
from lth_jax.experiments import measures, measures_report


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
    workdir, summary = finished
    assert summary["members"] == 4 and summary["clean_members"] == 2
    names = set(summary["ranking"])
    assert {"pacbayes_mag_flatness", "log_prod_of_spec_over_margin", "path_norm", "fro_dist", "params"} <= names
    for r in summary["ranking"].values():
        assert r["tau"] is None or -1 <= r["tau"] <= 1
    assert set(summary["label_noise"]) == {"0", "0.3"}
    for g in ("a0_n0", "a0_n0.3"):
        result = json.load(open(os.path.join(workdir, "groups", g, "result.json")))
        assert len(result["members"]) == 2
        for m in result["members"].values():
            assert 0 < m["train_accuracy"] <= 1 and m["gap"] == pytest.approx(m["train_accuracy"] - m["test_accuracy"])
            assert all(np.isfinite(v) for v in m["measures"].values())
    assert os.path.exists(os.path.join(workdir, "plots", "measures.png"))
    assert os.path.exists(os.path.join(workdir, "plots", "label_noise.png"))
    measures_report.print_summary(summary)
    assert "Kendall tau" in capsys.readouterr().out


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


def test_tau_and_psi_on_a_known_grid():
    members = []
    for a, lr, wd, seed in itertools.product(range(2), (1e-3, 1e-2), (0.0, 1e-4), range(2)):
        gap = 0.1 * a + lr * 5 + wd * 100 + 0.001 * seed
        members.append({"architecture": a, "learning_rate": lr, "weight_decay": wd, "seed": seed,
                        "label_noise": 0.0, "gap": gap, "test_accuracy": 0.5, "train_accuracy": 0.5 + gap,
                        "reached_stop_loss": True, "measures": {"up": gap, "down": -gap, "lr": lr}})
    summary = measures_report.summarize([{"members": {str(i): m for i, m in enumerate(members)}}], ["a", "b"], 0.0)
    assert summary["ranking"]["up"]["tau"] == pytest.approx(1.0) and summary["ranking"]["up"]["psi"] == pytest.approx(1.0)
    assert summary["ranking"]["down"]["psi"] == pytest.approx(-1.0)
    lr_only = summary["ranking"]["lr"]  # follows the gap when only the learning rate varies, constant otherwise
    assert lr_only["learning_rate"] == pytest.approx(1.0)
    assert lr_only["architecture"] is None and lr_only["weight_decay"] is None and lr_only["psi"] == pytest.approx(1.0)


@pytest.mark.parametrize("over, message", [
    (dict(optimizer__name="nesterov"), "trains with one of sgd, momentum, adam, adamw"),
    (dict(measures__label_noise=(0.2,)), "including 0"),
    (dict(measures__learning_rates=(1e-3, 1e-3)), "lists a value twice"),
    (dict(measures__models=("conv2",)), "not both"),
    (dict(measures__learning_rates=(1e-3,), measures__label_noise=(0.0,)), "at least 2 clean members"),
    (dict(model__name="lenet_300_100"), "sets the hidden widths of model 'mlp'"),
    (dict(measures__stop_loss=0.0), "stop_loss must be > 0"),
])
def test_bad_config(tmp_path, over, message):
    with pytest.raises(LthError) as e:
        measures.run(tiny(**over), str(tmp_path / "bad"), progress=False)
    assert message in str(e.value)
    assert not os.path.exists(tmp_path / "bad")
