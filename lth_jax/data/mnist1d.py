"""MNIST-1D (Greydanus 2020), generated offline with `mnist1d.data.make_dataset`.

Never calls `mnist1d.data.get_dataset`, which downloads. Importing the
generator and making the default 5000 examples take about 2.5 s, paid by every
run, so the generated arrays are kept in a cache: `$LTH_JAX_CACHE_DIR/mnist1d/`
(default `~/.cache/lth_jax`; an empty LTH_JAX_CACHE_DIR turns it off), one .npz
per (mnist1d version, options, data_seed). Generation is deterministic in
those, so a cached file holds exactly what generating again would give.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random

import numpy as np

from lth_jax import files
from lth_jax.data.dataset import Arrays, take_first
from lth_jax.errors import LthError, check

# Options of mnist1d's get_dataset_args that a caller may override. `seed` is
# spelled `data_seed` here because `load(seed=...)` seeds the validation split.
_SKIPPED = ("url", "seed")


def _default_args() -> dict:
    from mnist1d.data import get_dataset_args
    return get_dataset_args(as_dict=True)


def options() -> list:
    return sorted([k for k in _default_args() if k not in _SKIPPED]
                  + ["data_seed", "num_train", "num_test"])


def load(*, data_dir=None, num_train=None, num_test=None, data_seed: int = 42,
         **overrides) -> Arrays:
    """Generate MNIST-1D: (N, 40) float32, 10 classes; `data_dir` is unused.

    `overrides` are fields of `mnist1d.data.get_dataset_args()` (e.g.
    num_samples=5000, train_split=0.8); `data_seed` is its `seed`.
    """
    del data_dir  # generated, nothing to read
    path = _cache_path(overrides, data_seed)
    data = _read(path)
    if data is None:
        data = _generate(overrides, data_seed)
        if path:
            _write(path, data)
    x_train, y_train = take_first(data["x"], data["y"], num_train, "num_train", "mnist1d")
    x_test, y_test = take_first(data["x_test"], data["y_test"], num_test, "num_test", "mnist1d")
    return Arrays(x_train.astype(np.float32), y_train.astype(np.int32),
                  x_test.astype(np.float32), y_test.astype(np.int32), num_classes=int(data["num_classes"]))


def _generate(overrides: dict, data_seed: int) -> dict:
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    args = _default_args()
    for key, value in overrides.items():
        if key not in args or key in _SKIPPED:
            raise LthError(f"unknown option {key!r} for dataset mnist1d; allowed: "
                           f"{', '.join(options())}; fix the spelling or drop it")
        args[key] = value
    args["seed"] = data_seed
    n = args["num_samples"]
    check(isinstance(n, int) and not isinstance(n, bool) and n >= 10,
          f"num_samples={n!r} for mnist1d is not a whole number >= 10; pass e.g. 5000 (the paper's)")
    split = args["train_split"]
    check(isinstance(split, (int, float)) and 0 < split < 1,
          f"train_split={split!r} for mnist1d is outside (0, 1); pass e.g. 0.8")

    # make_dataset reseeds the global `random` and `np.random` generators:
    # keep the caller's state as it was.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(ObjectView(args))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {"x": data["x"], "y": data["y"], "x_test": data["x_test"], "y_test": data["y_test"],
            "num_classes": np.int64(len(data["templates"]["y"]))}


def _cache_path(overrides: dict, data_seed: int) -> str | None:
    root = os.environ.get("LTH_JAX_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "lth_jax"))
    if not root:
        return None
    from importlib.metadata import version
    try:
        key = json.dumps([version("mnist1d"), sorted(overrides.items()), data_seed], default=repr)
    except TypeError:
        return None
    return os.path.join(root, "mnist1d", hashlib.sha256(key.encode()).hexdigest()[:20] + ".npz")


def _read(path: str | None) -> dict | None:
    """The cached arrays, or None when absent or unreadable (then they are made again)."""
    if not path or not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in ("x", "y", "x_test", "y_test", "num_classes")}
    except Exception:  # a damaged or foreign file: generate instead
        return None


def _write(path: str, data: dict) -> None:
    buf = io.BytesIO()
    np.savez(buf, **data)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        files.atomic_write(path, buf.getvalue())
    except OSError:  # a read-only home: run without the cache
        pass
