"""A CPU-scale data-diet study on Fashion-MNIST (Paul et al. 2021's method):
EL2N from a 10-member MLP ensemble two epochs in, GraNd and input norm, and
training on 30/50/70% of the examples kept hardest, easiest or at random
(3 seeds), each for as many steps as the full-data run. Add
--config.diet.label_noise=0.1 to flip 10% of the labels and measure how well
each score finds them.

Run:

    python main.py --config configs/diet_fashion.py --workdir runs/diet_fashion
"""
from configs import base


def get_config():
    c = base.get_config()
    c.experiment = "diet"
    c.data.name = "fashion_mnist"
    c.data.validation_size = 0
    c.model.name = "mlp"
    c.model.widths = (300, 100)
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.train.batch_size = 128
    c.train.steps = 4000
    c.train.eval_every = 500
    c.train.checkpoint_every = 1000
    c.diet.members = 10
    c.diet.score_epochs = 2.0
    c.diet.scores = ("el2n", "grand", "input_norm", "forgetting")
    c.diet.selections = ("el2n:hardest", "el2n:easiest", "random", "grand:hardest")
    c.diet.fractions = (0.3, 0.5, 0.7)
    c.diet.seeds = 3
    return c
