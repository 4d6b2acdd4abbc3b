"""Which generalization measure predicts the gap? A grid on MNIST-1D: MLPs of
three architectures (100-100, 100-100-100, 400-400) x learning rates (1e-3,
3e-3) x weight decays (0, 1e-4) x 2 seeds = 24 clean members, the same grid
on labels with 20% flipped (Gastpar et al.'s check): 48 members (Adam, batch
100), each stopped when its cross-entropy on the whole training set reaches
0.01. As in Jiang et al., only members that reach it are ranked: the cap,
10,500 steps, is the reference code's 300 epochs of the 3,500 training
examples, and a member still above 0.01 there is listed apart, not ranked.
Every architecture here fits its training set, noisy labels included, well
within the cap (by 8,500 steps); MLPs with one hidden layer do not (100
units: every noisy member above 0.01 after 16,000 steps; 400 units: 3 of
4 after 12,000). Every measure of Jiang et al. 2020, Kendall tau and Psi.

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
    c.train.steps = 10500  # 300 epochs (the reference's cap); members stop at the loss long before
    c.train.eval_every = 250
    c.train.checkpoint_every = 250  # = eval_every: a member stops at the evaluation that sees the loss
    c.measures.widths = ((100, 100), (100, 100, 100), (400, 400))
    c.measures.learning_rates = (1e-3, 3e-3)
    c.measures.weight_decays = (0.0, 1e-4)
    c.measures.seeds = 2
    c.measures.label_noise = (0.0, 0.2)
    return c
