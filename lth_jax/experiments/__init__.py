"""One module per experiment; each has run(config, workdir, overwrite, progress)."""
import importlib

from lth_jax.errors import unknown

EXPERIMENTS = ("train", "lottery", "diet", "unit_search", "prune_at_init", "measures")
_STUDIES = ("lottery", "diet", "unit_search", "prune_at_init", "measures")
# config sections an experiment does not read: setting a key there is an error, not a silent no-op
IGNORED_SECTIONS = {"train": _STUDIES, **{e: ("mask", *(s for s in _STUDIES if s != e)) for e in _STUDIES}}


def get(name: str):
    if name not in EXPERIMENTS:
        raise unknown("experiment", name, EXPERIMENTS)
    return importlib.import_module(f"lth_jax.experiments.{name}")
