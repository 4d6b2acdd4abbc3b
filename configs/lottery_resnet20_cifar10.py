"""ResNet-20 lottery tickets with rewinding on CIFAR-10 (Frankle et al. 2020,
open_lth recipe): SGD 0.1, momentum 0.9, weight decay 1e-4, batch 128, 160
epochs (62.5k steps) with lr x0.1 at epochs 80 and 120; global pruning 20% per
level; rewind to iteration 500 (rewinding to 0 does not give matching tickets).

For accelerator users: CIFAR-10 must be prepared with tfds beforehand
(--config.data.data_dir=DIR). Tested here on tfds mock data.

Run (on an accelerator):

    python main.py --config configs/lottery_resnet20_cifar10.py --workdir runs/lottery_resnet20_cifar10 --config.data.data_dir=DIR
"""
from configs import base

STEPS_PER_EPOCH = 45000 // 128   # 5k of the 50k held out for validation


def get_config():
    c = base.get_config()
    c.experiment = "lottery"
    c.data.name = "cifar10"
    c.data.validation_size = 5000
    c.model.name = "resnet20"
    del c.model["widths"]
    c.optimizer.name = "momentum"
    c.optimizer.learning_rate = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 1e-4
    c.optimizer.schedule = "step"
    c.optimizer.boundaries = (80 * STEPS_PER_EPOCH, 120 * STEPS_PER_EPOCH)
    c.train.batch_size = 128
    c.train.steps = 160 * STEPS_PER_EPOCH
    c.train.eval_every = 2 * STEPS_PER_EPOCH
    c.train.checkpoint_every = 10 * STEPS_PER_EPOCH
    c.lottery.levels = 16
    c.lottery.fraction = 0.2
    c.lottery.scope = "global"
    c.lottery.rewind_step = 500
    c.lottery.seeds = 1
    return c
