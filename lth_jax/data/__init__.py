"""Data: `load(name) -> Dataset` of numpy arrays, from MNIST-1D (generated),
IDX files (Fashion-MNIST, MNIST) or tensorflow-datasets; and on-device
augmentation (`lth_jax.data.augment`, imported on first use so that loading
data does not import jax)."""

from lth_jax.data.dataset import AUGMENTATIONS, Arrays, Dataset
from lth_jax.data.registry import TFDS_PREFIX, load, names

__all__ = ["AUGMENTATIONS", "Arrays", "Dataset", "TFDS_PREFIX", "load", "names", "augment"]


def __getattr__(attr):
    if attr == "augment":
        import importlib
        return importlib.import_module("lth_jax.data.augment")
    raise AttributeError(f"module 'lth_jax.data' has no attribute {attr!r}")
