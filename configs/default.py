"""The default job: a small lottery-ticket run on MNIST-1D (generated offline).

MLP 40-100-100-10, Adam, 10 pruning levels of 20% (global, down to 10.7%), reset to
initialisation, 2 replicates, with both controls; a few minutes on 2 CPU cores.

Run (also what plain `python main.py` runs):

    python main.py --config configs/default.py --workdir runs/default
"""
from configs import base


def get_config():
    c = base.get_config()
    c.experiment = "lottery"
    c.train.steps = 2000
    c.train.eval_every = 100
    c.train.checkpoint_every = 500
    c.optimizer.learning_rate = 2e-3
    c.lottery.levels = 10
    c.lottery.seeds = 2
    return c
