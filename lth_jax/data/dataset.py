"""The `Dataset` container and the steps `load` applies to every source:
size limits, a seeded validation hold-out, and standardisation."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import numpy as np

from lth_jax.errors import LthError, check

AUGMENTATIONS = ("crop_flip",)


class Arrays(NamedTuple):
    """What a source returns: the canonical train and test splits (images
    already scaled to [0, 1]), before any hold-out or standardisation.
    The arrays belong to the caller: `assemble` standardises them in place."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    augment: Optional[str] = None


@dataclasses.dataclass(repr=False)
class Dataset:
    """A classification data set as numpy arrays.

    `train_indices[i]` is the position of `x_train[i]` in the canonical order
    of the source's training split, so per-example scores keep their identity
    when a validation split is held out (`val_indices` likewise for x_val).
    `mean`/`std` are the statistics used to standardise (None when
    `normalize=False`): per channel for images, one scalar otherwise.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    train_indices: np.ndarray
    num_classes: int
    name: str
    x_val: Optional[np.ndarray] = None
    y_val: Optional[np.ndarray] = None
    val_indices: Optional[np.ndarray] = None
    augment: Optional[str] = None
    mean: Optional[np.ndarray] = None
    std: Optional[np.ndarray] = None

    def __post_init__(self):
        check(len(self.x_train) == len(self.y_train) == len(self.train_indices),
              f"dataset {self.name}: x_train, y_train and train_indices differ in length "
              f"({len(self.x_train)}, {len(self.y_train)}, {len(self.train_indices)}); "
              "build them from the same examples")
        check(len(self.x_test) == len(self.y_test),
              f"dataset {self.name}: x_test and y_test differ in length "
              f"({len(self.x_test)}, {len(self.y_test)}); build them from the same examples")
        for split, y in (("training", self.y_train), ("test", self.y_test), ("validation", self.y_val)):
            if y is not None and len(y) and (y.min() < 0 or y.max() >= self.num_classes):
                bad = int(y.max()) if y.max() >= self.num_classes else int(y.min())
                raise LthError(f"dataset {self.name}: labels must be in [0, {self.num_classes}), the {split} "
                               f"split has {bad}; check the label files (or label_key) and num_classes")
        check(self.augment is None or self.augment in AUGMENTATIONS,
              f"dataset {self.name}: unknown augment {self.augment!r}; "
              f"allowed: None, {', '.join(AUGMENTATIONS)}")

    @property
    def input_shape(self) -> tuple:
        """Shape of one example, e.g. (40,) or (28, 28, 1)."""
        return tuple(self.x_train.shape[1:])

    def fingerprint(self) -> str:
        """A hash of the training examples as scored: their indices, labels and
        inputs (rounded to float16). Scores files carry it, so scores are never
        applied to other examples or labels."""
        import hashlib
        h = hashlib.sha256()
        for a in (np.asarray(self.train_indices, np.int64), np.asarray(self.y_train, np.int64),
                  np.asarray(self.x_train, np.float16)):
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:32]

    def __repr__(self) -> str:
        val = "" if self.x_val is None else f", val={len(self.x_val)}"
        return (f"Dataset({self.name!r}, train={len(self.x_train)}{val}, "
                f"test={len(self.x_test)}, input_shape={self.input_shape}, "
                f"num_classes={self.num_classes}, augment={self.augment!r})")


def check_count(value, what: str) -> None:
    """`value` is None or a positive int."""
    ok = value is None or (isinstance(value, (int, np.integer))
                           and not isinstance(value, bool) and value > 0)
    check(ok, f"{what}={value!r} is not a positive integer; pass a whole number "
              "> 0, or leave it out to use the whole split")


def take_first(x: np.ndarray, y: np.ndarray, n, what: str, name: str):
    """The first `n` examples (canonical order); all of them when n is None."""
    check_count(n, what)
    if n is None:
        return x, y
    check(n <= len(y), f"{what}={n} exceeds the {len(y)} examples of {name}; "
                       f"use at most {len(y)}, or leave {what} out")
    return x[:n], y[:n]


def hold_out(num: int, validation_size, seed, name: str):
    """Sorted (train_indices, val_indices) after a seeded random hold-out of
    `validation_size` of `num` examples."""
    ok = (isinstance(validation_size, (int, np.integer))
          and not isinstance(validation_size, bool) and validation_size >= 0)
    check(ok, f"validation_size={validation_size!r} is not a whole number >= 0; "
              "pass e.g. 0 (no validation split) or 1000")
    check(validation_size < num,
          f"validation_size={validation_size} must be smaller than the {num} "
          f"training examples of {name}; use a value in 0..{num - 1} (0 = no validation split)")
    everything = np.arange(num, dtype=np.int64)
    if validation_size == 0:
        return everything, None
    rng = np.random.default_rng(seed)
    val = np.sort(rng.choice(num, size=validation_size, replace=False)).astype(np.int64)
    keep = np.ones(num, dtype=bool)
    keep[val] = False
    return everything[keep], val


def stats(x: np.ndarray, chunk: int = 8192):
    """Mean and std over the training examples: per channel (last axis) for
    images (N, H, W, C), one scalar otherwise. Two passes over chunks,
    accumulated in float64, so large image sets need no float64 copy."""
    channels = x.shape[-1] if x.ndim == 4 else 1
    flat = x.reshape(len(x), -1, channels)
    count = flat.shape[0] * flat.shape[1]
    total = np.zeros(channels)
    for i in range(0, len(x), chunk):
        total += flat[i:i + chunk].reshape(-1, channels).sum(axis=0, dtype=np.float64)
    mean = (total / count).astype(np.float32)
    squares = np.zeros(channels)
    for i in range(0, len(x), chunk):
        d = flat[i:i + chunk].reshape(-1, channels) - mean
        squares += np.einsum("ij,ij->j", d, d, dtype=np.float64)
    std = np.sqrt(squares / count)
    std = np.where(std > 0, std, 1.0).astype(np.float32)
    if x.ndim != 4:
        return mean[0], std[0]  # 0-d arrays
    return mean, std


def standardize(x: Optional[np.ndarray], mean, std) -> Optional[np.ndarray]:
    """(x - mean) / std in place when x is a float32 array we own."""
    if x is None:
        return None
    x -= mean
    x /= std
    return x


def as_float32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def as_labels(y: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(y, dtype=np.int32)


def assemble(raw: Arrays, *, name: str, validation_size=0, seed=0,
             normalize: bool = True) -> Dataset:
    """Hold out a validation split, standardise, and wrap into a Dataset."""
    x_train, y_train = as_float32(raw.x_train), as_labels(raw.y_train)
    x_test, y_test = as_float32(raw.x_test), as_labels(raw.y_test)
    if len(y_train) == 0 or len(y_test) == 0:
        raise LthError(f"dataset {name} has {len(y_train)} training and {len(y_test)} test "
                       "examples; both splits need at least one, so enlarge the data set")
    train_idx, val_idx = hold_out(len(y_train), validation_size, seed, name)
    x_val = y_val = None
    if val_idx is not None:
        x_val, y_val = x_train[val_idx], y_train[val_idx]
        x_train, y_train = x_train[train_idx], y_train[train_idx]
    mean = std = None
    if normalize:
        mean, std = stats(x_train)
        x_train, x_val, x_test = (standardize(a, mean, std) for a in (x_train, x_val, x_test))
    return Dataset(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                   train_indices=train_idx, num_classes=int(raw.num_classes), name=name,
                   x_val=x_val, y_val=y_val, val_indices=val_idx, augment=raw.augment,
                   mean=mean, std=std)
