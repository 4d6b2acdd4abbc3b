"""One module per experiment; each has run(config, workdir, overwrite, progress)."""
import importlib

from lth_jax.errors import unknown

EXPERIMENTS = ("train", "lottery", "diet")


def get(name: str):
    if name not in EXPERIMENTS:
        raise unknown("experiment", name, EXPERIMENTS)
    return importlib.import_module(f"lth_jax.experiments.{name}")
