"""Lottery tickets on a data diet (Paul et al. 2022), at MNIST-1D scale.

The dense pre-training up to the rewind step (200) uses only the easiest 10%
of the training examples by EL2N; the levels then rewind to that point and
train on all data. First score the data:

    python main.py --config configs/diet_mnist1d.py --workdir runs/diet
    python main.py --config configs/lottery_diet_mnist1d.py --workdir runs/lt_diet \
        --config.lottery.pretrain_scores=runs/diet/scores/scores.npz

Compare with --config.lottery.pretrain_selection=random or hardest.
"""
from configs import default


def get_config():
    c = default.get_config()
    c.lottery.rewind_step = 200
    c.lottery.pretrain_scores = "runs/diet/scores/scores.npz"
    c.lottery.pretrain_score = "el2n"
    c.lottery.pretrain_selection = "easiest"
    c.lottery.pretrain_fraction = 0.1
    return c
