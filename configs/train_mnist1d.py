"""experiment = "train": a dense MLP on MNIST-1D (generated offline).

Run:

    python main.py --config configs/train_mnist1d.py --workdir runs/train_mnist1d
"""
from configs import base


def get_config():
    return base.get_config()
