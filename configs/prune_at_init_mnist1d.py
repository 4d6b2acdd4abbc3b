"""Pruning at initialisation on MNIST-1D with the default job's recipe (MLP
40-100-100-10, Adam 2e-3, 2000 steps): SNIP, GraSP, SynFlow, magnitude and
random masks at five densities, each with its shuffle and reinit controls,
3 replicates; 45 members per density trained as one program.

Run (pass the default job's workdir to draw its IMP tickets alongside):

    python main.py --config configs/prune_at_init_mnist1d.py --workdir runs/pai_mnist1d \\
        --config.prune_at_init.lottery_workdir=runs/default
"""
from configs import base


def get_config():
    c = base.get_config()
    c.experiment = "prune_at_init"
    c.train.steps = 2000
    c.train.eval_every = 100
    c.train.checkpoint_every = 500
    c.optimizer.learning_rate = 2e-3
    c.prune_at_init.densities = (0.5, 0.2, 0.1, 0.05, 0.02)
    c.prune_at_init.seeds = 3
    return c
