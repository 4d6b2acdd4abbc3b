"""experiment = "train": a dense MLP on MNIST-1D (generated offline)."""
from configs import base


def get_config():
    return base.get_config()
