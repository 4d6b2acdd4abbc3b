"""The accelerator configs shrunk to a few steps, for runs on tfds mock data."""
import importlib


def shrunk(name: str, validation_size=16):
    """configs/<name>.py with 4 steps of batch 8, evaluated and checkpointed
    every 2; `validation_size` None keeps the config's split."""
    cfg = importlib.import_module(f"configs.{name}").get_config()
    if validation_size is not None:
        cfg.data.validation_size = validation_size
    cfg.train.batch_size, cfg.train.eval_batch_size = 8, 16
    cfg.train.steps, cfg.train.eval_every, cfg.train.checkpoint_every = 4, 2, 2
    return cfg
