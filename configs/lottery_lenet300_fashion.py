"""Frankle & Carbin's LeNet-300-100 lottery recipe, on Fashion-MNIST.

Adam 1.2e-3, batch 60, Gaussian Glorot init, layerwise pruning 20% per level
with the output layer at 10%, reset to initialisation, 5k validation
examples for the early-stopping iteration. The paper trains 50k iterations;
this CPU-scale default trains 3k per level (override train.steps).
Fashion-MNIST comes from the Debian package dataset-fashion-mnist.

Run:

    python main.py --config configs/lottery_lenet300_fashion.py --workdir runs/lottery_lenet300_fashion
"""
from configs import base


def get_config():
    c = base.get_config()
    c.experiment = "lottery"
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
    c.lottery.levels = 12
    c.lottery.fraction = 0.2
    c.lottery.scope = "layerwise"
    c.lottery.layer_fractions = {"output/kernel": 0.1}
    c.lottery.rewind_step = 0
    c.lottery.seeds = 3
    return c
