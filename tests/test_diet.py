import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import diet_mnist1d, default
from lth_jax import ensemble, subsets
from lth_jax.errors import LthError
from lth_jax.experiments import common, diet, lottery
from lth_jax.trainer import Trainer


def tiny(**over):
    c = diet_mnist1d.get_config()
    c.data.source.num_samples = 600
    c.data.validation_size = 0
    c.model.widths = (24,)
    c.train.steps = 30
    c.train.batch_size = 40
    c.train.eval_every = 10
    c.train.checkpoint_every = 10
    c.diet.members = 3
    c.diet.score_epochs = 1.0
    c.diet.fractions = (0.5,)
    c.diet.seeds = 2
    c.diet.chunk_size = 128
    for k, v in over.items():
        section, key = k.split("__")
        c[section][key] = v
    return c


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
    cfg = tiny(diet__label_noise=0.1)
    workdir = str(tmp_path_factory.mktemp("diet"))
    return cfg, workdir, diet.run(cfg, workdir, progress=False)


def test_scores_file_and_summary(noisy_run):
    cfg, workdir, summary = noisy_run
    with np.load(os.path.join(workdir, "scores", "scores.npz")) as f:
        n = 480  # 600 * 0.8 train split
        np.testing.assert_array_equal(f["indices"], np.arange(n))
        assert f["el2n"].shape == (3, n) and f["grand"].shape == (3, n) and f["forgetting"].shape == (3, n)
        np.testing.assert_allclose(f["el2n_mean"], f["el2n"].mean(0), rtol=1e-6)
        assert len(f["flipped"]) == 48
        assert not np.allclose(f["el2n"][0], f["el2n"][1])  # independent members
    assert set(summary["test_accuracy"]) == {"el2n:hardest", "el2n:easiest", "random", "full"}
    assert summary["test_accuracy"]["random"]["0.5"]["kept"] == 240
    ln = summary["label_noise"]
    assert ln["flipped"] == 48 and ln["auroc"]["el2n"] > 0.55  # flipped labels score high (0.58 here)
    assert ln["auroc"]["el2n"] > ln["auroc"]["input_norm"]  # the input norm knows nothing of labels
    for plot in ("accuracy_vs_kept.png", "score_histograms.png"):
        assert os.path.exists(os.path.join(workdir, "plots", plot))


def test_hardest_subset_really_keeps_highest_scores(noisy_run):
    cfg, workdir, _ = noisy_run
    with np.load(os.path.join(workdir, "scores", "scores.npz")) as f:
        el2n = f["el2n_mean"]
    kept = json.load(open(os.path.join(workdir, "fractions", "0.5", "result.json")))
    hardest = kept["members"]["el2n:hardest/0"]["flipped_kept"]
    easiest = kept["members"]["el2n:easiest/0"]["flipped_kept"]
    assert hardest > easiest  # flipped labels have high EL2N
    chosen = subsets.choose("hardest", el2n, 0.5)
    assert el2n[chosen].min() >= np.delete(el2n, chosen).max()


def test_ensemble_member_matches_training_alone():
    cfg = tiny()
    parts = common.build(cfg, members=True)
    keys = [jax.random.fold_in(jax.random.key(0), m) for m in range(3)]
    d = diet.Diet(cfg, "/tmp/unused", progress=False)
    stacked = d.member_states(keys)
    seeds = [(0, m) for m in range(3)]
    parts.trainer.set_members(seeds)
    together = parts.trainer.run(jax.tree_util.tree_map(jnp.copy, stacked), 20, 10, jax.random.key(1), progress=False)
    alone = common.build(cfg)
    alone.trainer.reseed(seeds[2])
    st = alone.trainer.run(ensemble.take(stacked, 2), 20, 10, jax.random.key(1), progress=False)
    for a, b in zip(jax.tree_util.tree_leaves(st.params), jax.tree_util.tree_leaves(ensemble.take(together.params, 2))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_member_subsets_only_draw_their_examples():
    x = np.arange(100, dtype=np.float32)[:, None]
    from lth_jax import models, optim
    from lth_jax.train import Steps
    trainer = Trainer(Steps(models.get("mlp", num_classes=2, widths=(4,)), optim.optimizer("sgd", 0.1), members=True),
                      x, np.zeros(100, np.int32), {}, batch_size=10, seed=0)
    trainer.set_members([(0, 0), (0, 1)], [np.arange(0, 40), np.arange(60, 100)])
    rows = trainer.order(0, 12)  # (steps, members, batch)
    assert rows[:, 0].min() >= 0 and rows[:, 0].max() < 40
    assert rows[:, 1].min() >= 60
    assert len(set(rows[:4, 0].ravel())) == 40  # one epoch of the subset covers it
    with pytest.raises(LthError, match="larger than a training subset"):
        trainer.set_members(None, [np.arange(5)])


def test_subset_rules_and_label_noise():
    s = np.array([0.1, 0.9, 0.5, 0.3, 0.7, 0.2])
    assert subsets.choose("hardest", s, 0.5).tolist() == [1, 2, 4]
    assert subsets.choose("easiest", s, 0.5).tolist() == [0, 3, 5]
    assert subsets.choose("window", s, 0.5, offset=1 / 6).tolist() == [2, 3, 4]
    assert len(subsets.choose("random", s, 0.5, seed=1)) == 3
    labels = np.array([0, 0, 0, 0, 1, 1])
    bal = subsets.choose("hardest", s, 0.5, labels=labels, balanced=True)
    assert sorted(labels[bal].tolist()) == [0, 0, 1]
    y = np.arange(1000) % 10
    noisy, flipped = subsets.flip_labels(y, 10, 0.1, seed=0)
    assert len(flipped) == 100 and np.all(noisy[flipped] != y[flipped])
    assert np.array_equal(np.delete(noisy, flipped), np.delete(y, flipped))
    assert subsets.auroc(np.arange(10.0), [8, 9]) == 1.0
    assert subsets.auroc(-np.arange(10.0), [8, 9]) == 0.0
    assert subsets.precision_at(np.arange(10.0), [9, 0]) == 0.5


@pytest.mark.parametrize("over, message", [
    (dict(diet__members=0), "diet.members"),
    (dict(diet__fractions=(0.0,)), "kept fraction must be in (0, 1]"),
    (dict(diet__fractions=(1.5,)), "kept fraction must be in (0, 1]"),
    (dict(diet__chunk_size=-1), "chunk_size must be >= 1, or 0"),
    (dict(diet__selections=("loss:hardest",)), "not in diet.scores"),
])
def test_bad_diet_config(tmp_path, over, message):
    with pytest.raises(LthError) as e:
        diet.run(tiny(**over), str(tmp_path / "bad"), progress=False)
    assert message in str(e.value)
    assert not os.path.exists(tmp_path / "bad")


def test_scores_file_must_match_dataset(tmp_path, noisy_run):
    _, workdir, _ = noisy_run
    cfg = tiny(diet__scores_path=os.path.join(workdir, "scores", "scores.npz"))
    cfg.data.source.num_samples = 700
    with pytest.raises(LthError, match="computed on other training examples"):
        diet.run(cfg, str(tmp_path / "other"), progress=False)


def test_lottery_on_a_data_diet_pretrains_on_the_subset(tmp_path, monkeypatch):
    scored = tiny(data__validation_size=100, diet__seeds=1, diet__full_data=False, train__steps=10,
                  diet__scores=("el2n",), diet__selections=("el2n:hardest",))
    diet.run(scored, str(tmp_path / "diet"), progress=False)
    c = default.get_config()
    c.data.source.num_samples = 600
    c.data.validation_size = 100
    c.model.widths = (24,)
    c.train.steps, c.train.batch_size, c.train.eval_every = 30, 20, 10
    c.lottery.levels, c.lottery.seeds, c.lottery.rewind_step = 1, 1, 10
    c.lottery.pretrain_scores = str(tmp_path / "diet" / "scores" / "scores.npz")
    c.lottery.pretrain_fraction = 0.1
    seen = []
    original = Trainer.set_members

    def spy(self, seeds=None, subsets=None):
        seen.append(None if subsets is None else subsets[0])
        return original(self, seeds, subsets)

    monkeypatch.setattr(Trainer, "set_members", spy)
    lottery.run(c, str(tmp_path / "lt"), progress=False)
    with np.load(tmp_path / "diet" / "scores" / "scores.npz") as f:
        easiest = subsets.choose("easiest", f["el2n_mean"], 0.1)
    used = [s for s in seen if s is not None]
    assert len(used) == 1 and np.array_equal(used[0], easiest) and len(easiest) == 38  # 10% of 480 - 100
    c.lottery.rewind_step = 0
    with pytest.raises(LthError, match="needs lottery.rewind_step > 0"):
        lottery.run(c, str(tmp_path / "bad"), progress=False)


def test_scoring_only_run(tmp_path, capsys):
    cfg = tiny(diet__fractions=(), diet__full_data=False, diet__score_epochs=0.0,
               diet__scores=("el2n", "grand", "grand_init", "input_norm"), diet__selections=("random",))
    summary = diet.run(cfg, str(tmp_path / "scores_only"), progress=False)
    assert summary["test_accuracy"] == {}
    assert set(summary["spearman"]) == {"el2n vs grand", "el2n vs grand_init", "el2n vs input_norm",
                                        "grand vs grand_init", "grand vs input_norm", "grand_init vs input_norm"}
    assert "Spearman" in capsys.readouterr().out
    with np.load(os.path.join(tmp_path, "scores_only", "scores", "scores.npz")) as f:
        np.testing.assert_array_equal(f["grand_init"], f["grand"])  # scored at initialisation, both are GraNd at init


def test_grand_init_scores_the_members_at_initialisation_after_they_trained(tmp_path):
    """One run gives GraNd at init and the scores after `score_epochs` (Kirsch 2023's comparison)."""
    trained = diet.run(tiny(diet__fractions=(), diet__full_data=False, diet__scores=("grand", "grand_init"),
                            diet__selections=("random",)), str(tmp_path / "trained"), progress=False)
    at_init = diet.run(tiny(diet__fractions=(), diet__full_data=False, diet__score_epochs=0.0,
                            diet__scores=("grand",), diet__selections=("random",)), str(tmp_path / "init"),
                       progress=False)
    assert trained["score_steps"] > 0 and at_init["score_steps"] == 0
    with np.load(os.path.join(tmp_path, "trained", "scores", "scores.npz")) as a, \
            np.load(os.path.join(tmp_path, "init", "scores", "scores.npz")) as b:
        np.testing.assert_allclose(a["grand_init"], b["grand"], rtol=1e-5)
        assert not np.allclose(a["grand"], a["grand_init"], rtol=1e-2)


def test_stack_take_unstack_roundtrip():
    trees = [{"a": jnp.full((2,), i), "b": {"c": jnp.full((3, 1), 10 * i)}} for i in range(3)]
    stacked = ensemble.stack(trees)
    assert stacked["b"]["c"].shape == (3, 3, 1)
    assert int(ensemble.take(stacked, 2)["a"][0]) == 2
    for a, b in zip(ensemble.unstack(stacked), trees):
        np.testing.assert_array_equal(a["b"]["c"], b["b"]["c"])
