"""The accelerator configs run end to end on tfds mock data (a few steps)."""
import pytest
import tensorflow_datasets as tfds

from lth_jax.experiments import diet, measures, unit_search
from mock_configs import shrunk

# compile-bound (see conftest); not the measures test, whose bisection runs long enough to need optimized code
quick_compile = pytest.mark.usefixtures("quick_compile")


@quick_compile
def test_diet_resnet18_config_runs_on_mock_data(tmp_path):
    cfg = shrunk("diet_resnet18_cifar10", validation_size=None)
    cfg.model.width = 8  # the recipe's architecture, narrower, to keep the test fast
    cfg.diet.members = 2
    cfg.diet.score_epochs = 0.5
    with tfds.testing.mock_data(num_examples=32, policy=tfds.testing.MockPolicy.USE_CODE):
        summary = diet.run(cfg, str(tmp_path / "diet"), progress=False)
    assert set(summary["test_accuracy"]) == {"el2n:hardest", "random", "full"}
    assert summary["test_accuracy"]["random"]["0.5"]["kept"] == 16


@quick_compile
def test_unit_search_conv6_config_runs_on_mock_data(tmp_path):
    cfg = shrunk("unit_search_conv6_cifar10")
    cfg.optimizer.boundaries = ()
    cfg.unit_search.candidates, cfg.unit_search.keep, cfg.unit_search.seeds = 2, 1, 1
    cfg.unit_search.sparsities, cfg.unit_search.criterion_step = (0.5,), 2
    with tfds.testing.mock_data(num_examples=48, policy=tfds.testing.MockPolicy.USE_CODE):
        summary = unit_search.run(cfg, str(tmp_path / "us"), progress=False)
    # Conv-6: six conv layers (64, 64, 128, 128, 256, 256 channels) and two dense (256, 256) feed another layer
    assert summary["hidden_units"] == 2 * (64 + 128 + 256) + 2 * 256
    assert summary["levels"][0]["units_kept"] == summary["hidden_units"] // 2


def test_measures_cifar10_config_runs_on_mock_data(tmp_path):
    cfg = shrunk("measures_cifar10")
    cfg.measures.models = ("conv2",)  # ResNet-20's BatchNorm folding is tested in tests/test_measures.py
    cfg.measures.weight_decays, cfg.measures.seeds, cfg.measures.label_noise = (0.0,), 1, (0.0,)
    cfg.measures.samples = 2
    with tfds.testing.mock_data(num_examples=48, policy=tfds.testing.MockPolicy.USE_CODE):
        summary = measures.run(cfg, str(tmp_path / "m"), progress=False)
    assert summary["clean_members"] == 2 and "pacbayes_mag_flatness" in summary["ranking"]
    assert all(r["tau"] is None or -1 <= r["tau"] <= 1 for r in summary["ranking"].values())
