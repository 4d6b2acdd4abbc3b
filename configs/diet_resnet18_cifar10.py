"""The data-diet paper's CIFAR-10 recipe (Paul et al. 2021): ResNet-18,
SGD 0.1 momentum 0.9 (Nesterov), weight decay 5e-4, batch 128, 200 epochs,
cosine decay; EL2N from 10 members at epoch 20; keep the hardest 50%.

For accelerator users: CIFAR-10 must be prepared with tfds beforehand
(--config.data.data_dir=DIR). Tested here on tfds mock data.

Run (on an accelerator):

    python main.py --config configs/diet_resnet18_cifar10.py --workdir runs/diet_resnet18_cifar10 --config.data.data_dir=DIR
"""
from configs import base

STEPS_PER_EPOCH = 50000 // 128


def get_config():
    c = base.get_config()
    c.experiment = "diet"
    c.data.name = "cifar10"
    c.data.validation_size = 0
    c.model.name = "resnet18"
    del c.model["widths"]
    c.optimizer.name = "nesterov"
    c.optimizer.learning_rate = 0.1
    c.optimizer.weight_decay = 5e-4
    c.optimizer.schedule = "cosine"
    c.train.batch_size = 128
    c.train.steps = 200 * STEPS_PER_EPOCH
    c.train.eval_every = 5 * STEPS_PER_EPOCH
    c.train.checkpoint_every = 10 * STEPS_PER_EPOCH
    c.diet.members = 10
    c.diet.score_epochs = 20.0
    c.diet.scores = ("el2n", "grand")
    c.diet.selections = ("el2n:hardest", "random")
    c.diet.fractions = (0.5,)
    c.diet.seeds = 1
    return c
