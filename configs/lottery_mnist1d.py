"""The MNIST-1D paper's lottery-ticket recipe (Greydanus & Kobak 2024):
MLP 40-500-500-10, Adam 2e-2, batch 100,
about 1500 steps per round, layerwise magnitude pruning, reset to init.

Run:

    python main.py --config configs/lottery_mnist1d.py --workdir runs/lottery_mnist1d
"""
from configs import base


def get_config():
    c = base.get_config()
    c.experiment = "lottery"
    c.data.name = "mnist1d"
    c.model.name = "mlp"
    c.model.widths = (500, 500)
    c.optimizer.learning_rate = 2e-2
    c.train.batch_size = 100
    c.train.steps = 1500
    c.train.eval_every = 100
    c.train.checkpoint_every = 500
    c.lottery.levels = 11            # 0.8^11 = 8.6% remaining: past 91% sparsity
    c.lottery.fraction = 0.2
    c.lottery.scope = "layerwise"
    c.lottery.seeds = 3
    return c
