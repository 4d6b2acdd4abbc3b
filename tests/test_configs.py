"""Every config loads and validates (the CIFAR configs run on tfds mock data in
test_configs_mock_*.py)."""
import glob
import importlib
import os

import pytest

from lth_jax import experiments
from lth_jax.experiments import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
               if not p.endswith("__init__.py"))


@pytest.mark.parametrize("name", NAMES)
def test_config_is_valid(name):
    cfg = importlib.import_module(f"configs.{name}").get_config()
    assert cfg.experiment in experiments.EXPERIMENTS
    if cfg.experiment != "train":
        experiments.get(cfg.experiment).check_config(cfg)
    else:
        common.check_train(cfg)
        assert cfg.mask.path == "" or cfg.mask.path.endswith(".npz")
    assert common.build_model(cfg, num_classes=10).__class__.__name__  # the model and its options exist
    doc = importlib.import_module(f"configs.{name}").__doc__
    assert f"python main.py --config configs/{name}.py" in doc, f"configs/{name}.py: give the command in the docstring"
