"""Conv-6 lottery tickets on CIFAR-10 (Frankle & Carbin 2019): Adam 3e-4,
batch 60, 30k iterations; layerwise pruning with conv layers at 15%, fully
connected layers at 20% and the output layer at 10% per level; reset to init.

For accelerator users: CIFAR-10 must be prepared with tfds beforehand
(--config.data.data_dir=DIR). Tested here on tfds mock data.

Run (on an accelerator):

    python main.py --config configs/lottery_conv6_cifar10.py --workdir runs/lottery_conv6_cifar10 --config.data.data_dir=DIR
"""
from configs import base

CONV = [f"conv_{i}/kernel" for i in range(6)]


def get_config():
    c = base.get_config()
    c.experiment = "lottery"
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
    c.lottery.levels = 20
    c.lottery.fraction = 0.2          # the fully connected layers
    c.lottery.scope = "layerwise"
    c.lottery.layer_fractions = {**{k: 0.15 for k in CONV}, "output/kernel": 0.1}
    c.lottery.seeds = 1
    return c
