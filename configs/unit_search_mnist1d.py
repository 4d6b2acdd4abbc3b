"""Random search over sparse architectures in node space (2024), at MNIST-1D
scale: MLP 40-500-500-10, 32 random unit masks per node sparsity (50%, 75%,
90% of the hidden units removed) and replicate, all trained from the
parent's initialisation as one vmapped program, next to structured magnitude
pruning of units and the dense parent; the criterion is the validation loss
after 100 steps; 1000 steps each.

Run:

    python main.py --config configs/unit_search_mnist1d.py --workdir runs/unit_search_mnist1d
"""
from configs import base


def get_config():
    c = base.get_config()
    c.experiment = "unit_search"
    c.data.name = "mnist1d"
    c.data.validation_size = 500
    c.model.name = "mlp"
    c.model.widths = (500, 500)
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 2e-3
    c.train.batch_size = 100
    c.train.steps = 1000              # the dense parent's validation loss is lowest at 300-400
    c.train.eval_every = 100
    c.train.checkpoint_every = 500
    c.unit_search.candidates = 32
    c.unit_search.keep = 4
    c.unit_search.criterion_step = 100
    c.unit_search.seeds = 2
    return c
