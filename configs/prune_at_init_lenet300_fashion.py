"""Pruning at initialisation for LeNet-300-100 on Fashion-MNIST, with Frankle &
Carbin's training recipe (Adam 1.2e-3, batch 60, 3000 steps as
configs/lottery_lenet300_fashion.py): SNIP, GraSP, SynFlow, magnitude and
random masks with their shuffle and reinit controls at 10% and 1%, 3
replicates. Fashion-MNIST comes from the Debian package dataset-fashion-mnist.

Run:

    python main.py --config configs/prune_at_init_lenet300_fashion.py --workdir runs/pai_fashion
"""
from configs import base


def get_config():
    c = base.get_config()
    c.experiment = "prune_at_init"
    c.data.name = "fashion_mnist"
    c.data.validation_size = 5000
    c.model.name = "lenet_300_100"
    del c.model["widths"]
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1.2e-3
    c.train.batch_size = 60
    c.train.steps = 3000
    c.train.eval_every = 250
    c.train.checkpoint_every = 1000
    c.prune_at_init.densities = (0.1, 0.01)
    c.prune_at_init.seeds = 3
    return c
