"""A small data-diet run on MNIST-1D: a few minutes on 2 CPU cores.

Run:

    python main.py --config configs/diet_mnist1d.py --workdir runs/diet_mnist1d
"""
from configs import base


def get_config():
    c = base.get_config()
    c.experiment = "diet"
    c.train.steps = 1500
    c.train.eval_every = 250
    c.optimizer.learning_rate = 2e-3
    return c
