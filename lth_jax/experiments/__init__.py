"""One module per experiment; each has run(config, workdir, overwrite, progress)."""
import importlib

from lth_jax.errors import unknown

EXPERIMENTS = ("train", "lottery", "diet", "unit_search")
# config sections an experiment does not read: setting a key there is an error, not a silent no-op
IGNORED_SECTIONS = {"train": ("lottery", "diet", "unit_search"), "lottery": ("mask", "diet", "unit_search"),
                    "diet": ("mask", "lottery", "unit_search"), "unit_search": ("mask", "lottery", "diet")}


def get(name: str):
    if name not in EXPERIMENTS:
        raise unknown("experiment", name, EXPERIMENTS)
    return importlib.import_module(f"lth_jax.experiments.{name}")
