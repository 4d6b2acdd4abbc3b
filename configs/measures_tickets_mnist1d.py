"""Generalization measures along lth_jax's own axes: the lottery level and the
data-diet fraction. MLPs 100-100 and 400-400 on MNIST-1D x Adam learning
rates (1e-3, 3e-3) x 2 seeds, on all 4,000 training examples and on a random
half, each at IMP levels 0, 1 and 2 (20% of the remaining weights removed
per level by global magnitude, rewound to initialisation): 48 members, each
stopped at training cross-entropy 0.01 (at most 10,500 steps, as in
measures_mnist1d; a member that does not get there is listed apart, not
ranked). Kendall tau and Psi now also along the lottery level and the kept
fraction.

For EL2N-chosen subsets instead of random ones, score the data with the diet
experiment first and add
``--config.measures.diet_selection=el2n:hardest --config.measures.diet_scores=DIET_RUN/scores/scores.npz``.

Run:

    python main.py --config configs/measures_tickets_mnist1d.py --workdir runs/measures_tickets_mnist1d
"""
from configs import measures_mnist1d


def get_config():
    c = measures_mnist1d.get_config()
    c.measures.widths = ((100, 100), (400, 400))
    c.measures.weight_decays = (0.0,)
    c.measures.label_noise = (0.0,)
    c.measures.lottery_levels = 2
    c.measures.diet_fractions = (0.5,)
    c.lottery.fraction = 0.2
    c.lottery.scope = "global"
    return c
