"""`load(name)` and `names()`: one entry point over all sources."""

from __future__ import annotations

import functools
import inspect

from lth_jax.data import idx, mnist1d, tfds_source
from lth_jax.data.dataset import Dataset, assemble
from lth_jax.errors import LthError, unknown

TFDS_PREFIX = "tfds:"

# name -> function(*, data_dir, num_train, num_test, **options) -> Arrays
_SOURCES = {
    "mnist1d": mnist1d.load,
    "fashion_mnist": idx.load_fashion_mnist,
    "mnist": idx.load_mnist,
    "idx": idx.load_any,
    "cifar10": functools.partial(tfds_source.load, "cifar10"),
    "cifar100": functools.partial(tfds_source.load, "cifar100"),
}


def names() -> list:
    """Dataset names `load` knows (besides 'tfds:NAME' for any tfds data set)."""
    return sorted(_SOURCES)


def _source(name):
    if not isinstance(name, str):
        raise unknown("dataset", name, [*names(), f"{TFDS_PREFIX}<NAME>"])
    if name.startswith(TFDS_PREFIX):
        tfds_name = name[len(TFDS_PREFIX):]
        if not tfds_name:
            raise LthError(f"dataset {name!r} names no tfds data set; write e.g. 'tfds:cifar10'")
        return functools.partial(tfds_source.load, tfds_name)
    if name not in _SOURCES:
        raise unknown("dataset", name, [*names(), f"{TFDS_PREFIX}<NAME>"])
    return _SOURCES[name]


def _check_options(name, source, options):
    params = inspect.signature(source).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return  # the source checks its own options
    allowed = sorted(k for k, p in params.items()
                     if p.kind is p.KEYWORD_ONLY and k != "data_dir")
    for key in options:
        if key not in allowed:
            raise LthError(f"unknown option {key!r} for dataset {name}; allowed: "
                           f"{', '.join(allowed)}; fix the spelling or drop it")


def load(name: str, *, data_dir=None, validation_size: int = 0, seed: int = 0,
         normalize: bool = True, **source_kw) -> Dataset:
    """Load a data set as numpy arrays.

    name: one of names(), or 'tfds:NAME' for any prepared tfds image
      classification set (e.g. 'tfds:svhn_cropped').
    data_dir: where the source reads from (IDX directory, tfds data_dir);
      unused by mnist1d.
    validation_size: hold out this many training examples, chosen at random
      with `seed`, as x_val/y_val; `train_indices`/`val_indices` record which.
    normalize: standardise with the training split's mean/std (per channel
      for images); False keeps raw float32 (images scaled to [0, 1]).
    source_kw: num_train / num_test (keep the first n of each split) and
      options of the source, e.g. mnist1d: num_samples, train_split,
      data_seed; tfds: train_split, test_split, image_key, label_key.
    """
    source = _source(name)
    _check_options(name, source, source_kw)
    raw = source(data_dir=data_dir, **source_kw)
    return assemble(raw, name=name, validation_size=validation_size, seed=seed,
                    normalize=normalize)
