"""Random search over sparse architectures in node space at CIFAR-10 scale:
Conv-6 (Frankle & Carbin's recipe: Adam 3e-4, batch 60), 32 random channel /
unit masks per node sparsity and replicate (every conv layer loses the share
of its channels, every hidden dense layer of its units), next to structured
magnitude pruning of units and the dense parent; criterion = validation loss
after 1000 steps.

For accelerator users: CIFAR-10 must be prepared with tfds beforehand
(--config.data.data_dir=DIR). The unit masks of this model are checked here
on a small input (tests/test_unit_search.py).

Run (on an accelerator):

    python main.py --config configs/unit_search_conv6_cifar10.py --workdir runs/unit_search_conv6_cifar10 --config.data.data_dir=DIR
"""
from configs import base


def get_config():
    c = base.get_config()
    c.experiment = "unit_search"
    c.data.name = "cifar10"
    c.data.validation_size = 5000
    c.model.name = "conv6"
    del c.model["widths"]
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 3e-4
    c.train.batch_size = 60
    c.train.steps = 30000
    c.train.eval_every = 500
    c.train.checkpoint_every = 2500
    c.unit_search.candidates = 32
    c.unit_search.keep = 4
    c.unit_search.criterion_step = 1000
    c.unit_search.seeds = 2
    return c
