"""The accelerator configs run end to end on tfds mock data (a few steps)."""
import pytest
import tensorflow_datasets as tfds

from lth_jax.experiments import lottery
from mock_configs import shrunk

pytestmark = pytest.mark.usefixtures("quick_compile")  # compile-bound: see conftest


@pytest.mark.parametrize("name", ["lottery_conv6_cifar10", "lottery_resnet20_cifar10"])
def test_cifar_lottery_config_runs_on_mock_data(tmp_path, name):
    cfg = shrunk(name)
    cfg.lottery.levels = 1
    cfg.lottery.rewind_step = min(cfg.lottery.rewind_step, 2)
    cfg.optimizer.boundaries = ()
    with tfds.testing.mock_data(num_examples=48, policy=tfds.testing.MockPolicy.USE_CODE):
        summary = lottery.run(cfg, str(tmp_path / name), progress=False)
    level1 = summary["levels"][1]
    assert set(level1["kinds"]) == {"ticket", "reinit", "random_prune"}
    assert 0.7 < level1["density"] < 0.9
