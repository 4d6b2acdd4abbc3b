"""Which generalization measure predicts the gap? A grid on MNIST-1D: MLPs of
three architectures (100, 100-100, 400-400) x learning rates (1e-3, 3e-3)
x weight decays (0, 1e-4) x 2 seeds = 24 clean members, the same grid on
labels with 20% flipped (Gastpar et al.'s check): 48 members, each stopped
when its training cross-entropy reaches 0.01 or after 4000 steps (Adam,
batch 100). Every measure of Jiang et al. 2020, Kendall tau and Psi.

Run:

    python main.py --config configs/measures_mnist1d.py --workdir runs/measures_mnist1d
"""
from configs import base


def get_config():
    c = base.get_config()
    c.experiment = "measures"
    c.data.name = "mnist1d"
    c.data.validation_size = 500
    c.model.name = "mlp"
    c.optimizer.name = "adam"
    c.train.batch_size = 100
    c.train.steps = 4000
    c.train.eval_every = 250
    c.train.checkpoint_every = 250
    c.measures.widths = ((100,), (100, 100), (400, 400))
    c.measures.learning_rates = (1e-3, 3e-3)
    c.measures.weight_decays = (0.0, 1e-4)
    c.measures.seeds = 2
    c.measures.label_noise = (0.0, 0.2)
    return c
