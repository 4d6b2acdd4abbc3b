"""Config -> plain objects. The only place (with the experiment modules) that
reads a config; everything it builds is plain and callable from a notebook."""
from __future__ import annotations

import dataclasses
from typing import Any

import jax

from lth_jax import data as data_lib
from lth_jax import masks as masks_lib
from lth_jax import models, optim, parallel
from lth_jax.data.augment import crop_flip
from lth_jax.errors import check
from lth_jax.trainer import Trainer
from lth_jax.train import Steps, create_state, init_variables


def load_data(cfg, seed: int):
    d = cfg.data
    source_kw = {k: v for k, v in d.get("source", {}).items() if v is not None}  # None = the source's default
    return data_lib.load(d.name, data_dir=d.get("data_dir") or None, validation_size=d.validation_size,
                         seed=seed, **source_kw)


def build_model(cfg, num_classes: int):
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.model.items() if k != "name"}
    return models.get(cfg.model.name, num_classes=num_classes, **kw)


def build_optimizer(cfg, total_steps: int):
    o = cfg.optimizer
    lr = optim.schedule(o.schedule, o.learning_rate, total_steps, warmup_steps=o.warmup_steps,
                        boundaries=tuple(o.boundaries), decay=o.decay)
    return optim.optimizer(o.name, lr, momentum=o.momentum, weight_decay=o.weight_decay)


def check_train(cfg) -> None:
    t = cfg.train
    check(t.steps >= 1, f"train.steps must be >= 1, got {t.steps}")
    check(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
    check(t.eval_every >= 1, f"train.eval_every must be >= 1, got {t.eval_every}")
    check(t.checkpoint_every >= 1, f"train.checkpoint_every must be >= 1, got {t.checkpoint_every}")
    check(t.checkpoint_every % t.eval_every == 0,
          f"train.checkpoint_every ({t.checkpoint_every}) must be a multiple of train.eval_every ({t.eval_every}): "
          "checkpoints are saved at evaluations")
    check(t.eval_batch_size >= 0, f"train.eval_batch_size must be >= 1, or 0 (from the device's free memory), "
                                  f"got {t.eval_batch_size}")
    member_block(cfg)
    compute_dtype(cfg)


def compute_dtype(cfg):
    """train.compute_dtype as `train.Steps` takes it (None = float32)."""
    name = cfg.train.get("compute_dtype", "float32")
    check(name in ("float32", "bfloat16"), f"train.compute_dtype must be float32 or bfloat16, got {name!r}")
    return None if name == "float32" else name


def member_block(cfg):
    """train.member_block as `Steps` takes it: "auto", None ("vmap") or an int
    (a string of digits from the command line, where the key is a string)."""
    b = cfg.train.get("member_block", "auto")
    if b in ("auto", "vmap"):
        return None if b == "vmap" else b
    check(str(b).isdigit() and int(b) >= 1,
          f"train.member_block must be 'auto', 'vmap' or a whole number >= 1 (members trained at a time), got {b!r}")
    return int(b)


@dataclasses.dataclass
class Parts:
    """What a run trains with, built once from a config: the data, the model,
    the optimizer, the compiled `steps`, the `trainer` that runs them over the
    training set, and the device layout (None on one device)."""
    dataset: Any
    model: Any
    tx: Any
    steps: Steps
    trainer: Trainer
    data_parallel: Any  # parallel.DataParallel or None

    def init(self, key, mask=None):
        """A fresh TrainState from `key` (and an optional mask), placed on the devices."""
        variables = init_variables(self.model, key, self.dataset.input_shape)
        state = create_state(variables["params"], variables.get("batch_stats", {}), self.tx, mask)
        return self.data_parallel.put(state) if self.data_parallel else state


def build(cfg, members: bool = False, tx=None, dataset=None, train_labels=None) -> Parts:
    """The Parts of a config. `tx` replaces the config's optimizer, `dataset` an
    already loaded one, `train_labels` the training labels (also evaluated as
    the "train_full" set)."""
    check_train(cfg)
    parallel.initialize_distributed(cfg.parallel.distributed, heartbeat_timeout=cfg.parallel.heartbeat_timeout)
    dataset = dataset if dataset is not None else load_data(cfg, cfg.seed)
    model = build_model(cfg, dataset.num_classes)
    tx = tx if tx is not None else build_optimizer(cfg, cfg.train.steps)
    layout = None
    if cfg.parallel.data_parallel and jax.device_count() > 1:
        layout = parallel.DataParallel(parallel.data_mesh())
        layout.check_batch(cfg.train.batch_size, "train.batch_size")
        if cfg.train.eval_batch_size:
            layout.check_batch(cfg.train.eval_batch_size, "train.eval_batch_size")
    augment = crop_flip if dataset.augment == "crop_flip" else None
    steps = Steps(model, tx, augment=augment, batch_sharding=layout.batch if layout else None, members=members,
                  member_block=member_block(cfg), compute_dtype=compute_dtype(cfg))
    eval_sets = {"test": (dataset.x_test, dataset.y_test)}
    if dataset.x_val is not None:
        eval_sets["val"] = (dataset.x_val, dataset.y_val)
    y_train = dataset.y_train
    if train_labels is not None:
        y_train = train_labels
        eval_sets["train_full"] = (dataset.x_train, train_labels)
    trainer = Trainer(steps, dataset.x_train, y_train, eval_sets, batch_size=cfg.train.batch_size,
                      seed=cfg.seed, eval_batch_size=cfg.train.eval_batch_size or None, device_data=cfg.train.device_data,
                      put=layout.put if layout else None, log_activations=cfg.train.log_activations)
    return Parts(dataset, model, tx, steps, trainer, layout)


def load_mask(path: str, params):
    return masks_lib.load(path, params) if path else None


def seed_keys(seed: int) -> dict:
    """Named keys derived from config.seed, the only source of randomness."""
    root = jax.random.key(seed)
    return {name: jax.random.fold_in(root, i) for i, name in enumerate(("init", "augment", "prune", "control"))}
