"""Random search over sparse architectures in node space on Fashion-MNIST:
LeNet-300-100 (Frankle & Carbin's training recipe: Adam 1.2e-3, batch 60),
16 random unit masks per node sparsity and replicate next to structured
magnitude pruning of units and the dense parent, criterion = validation loss
after 250 steps. Fashion-MNIST comes from the Debian package
dataset-fashion-mnist.

Run:

    python main.py --config configs/unit_search_fashion.py --workdir runs/unit_search_fashion
"""
from configs import base


def get_config():
    c = base.get_config()
    c.experiment = "unit_search"
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
    c.unit_search.candidates = 16
    c.unit_search.keep = 4
    c.unit_search.criterion_step = 250
    c.unit_search.seeds = 2
    return c
