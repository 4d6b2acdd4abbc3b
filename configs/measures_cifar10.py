"""Generalization measures on CIFAR-10, for accelerators: Conv-2, Conv-4 and
ResNet-20 (BatchNorm folded into its convolutions for the norm measures) x
SGD with momentum at learning rates (0.01, 0.03) x weight decays (0, 5e-4)
x 2 seeds, clean and with 20% of the labels flipped: 48 members, batch 128,
each to training cross-entropy 0.01. As in Jiang et al., only members that
reach it are ranked; the cap, 105,500 steps, is the reference code's 300
epochs of the 45,000 training examples (a member still above 0.01 there is
listed apart). CIFAR-10 is read by tensorflow-datasets
(--config.data.data_dir=DIR).

Run:

    python main.py --config configs/measures_cifar10.py --workdir runs/measures_cifar10
"""
from configs import base


def get_config():
    c = base.get_config()
    c.experiment = "measures"
    c.data.name = "cifar10"
    c.data.validation_size = 5000
    c.model.name = "conv2"
    del c.model["widths"]
    c.optimizer.name = "momentum"
    c.train.batch_size = 128
    c.train.steps = 105500  # 300 epochs (the reference's cap)
    c.train.eval_every = 1000
    c.train.checkpoint_every = 1000
    c.measures.models = ("conv2", "conv4", "resnet20")
    c.measures.learning_rates = (0.01, 0.03)
    c.measures.weight_decays = (0.0, 5e-4)
    c.measures.seeds = 2
    c.measures.label_noise = (0.0, 0.2)
    return c
