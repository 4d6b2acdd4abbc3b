"""Image classification sets from tensorflow-datasets through
`tfds.data_source` (random access to ArrayRecord files; no TensorFlow).

The data must already be prepared (in the array_record file format) under
`data_dir`; nothing is downloaded.
"""

from __future__ import annotations

import numpy as np

from lth_jax.data.dataset import Arrays, check_count
from lth_jax.errors import LthError

# tfds names whose training recipe uses random crop + horizontal flip.
CROP_FLIP_PREFIXES = ("cifar",)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load(tfds_name: str, *, data_dir=None, num_train=None, num_test=None,
         train_split: str = "train", test_split: str = "test",
         image_key: str = "image", label_key: str = "label") -> Arrays:
    """Read `train_split` and `test_split` of `tfds_name` (e.g. "cifar10",
    "mnist", "imagenet2012"; a config as "name/config") into numpy.

    Images (N, H, W, C) float32, /255 when stored as uint8; labels int32;
    num_classes from the label feature. Reads example by example (`len` and
    `[]` of the data source), in the canonical order of each split.
    """
    import tensorflow_datasets as tfds

    where = data_dir or "the default tfds data_dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
    try:
        builder = tfds.builder(tfds_name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise LthError(f"unknown tfds dataset {tfds_name!r}; valid names: tfds.list_builders() "
                       "(a config as 'tfds:NAME/CONFIG'); fix the name after 'tfds:'") from None
    except Exception as e:  # bad config name, unreadable dir, ...
        raise LthError(f"cannot open tfds dataset {tfds_name!r} in {where}: {_first_line(e)}; "
                       "check the name and --config.data.data_dir") from None

    features = builder.info.features
    for key, what in ((image_key, "image_key"), (label_key, "label_key")):
        if key not in features:
            raise LthError(f"tfds dataset {tfds_name} has no feature {key!r}; its features: "
                           f"{', '.join(sorted(features.keys()))}; pass {what}=... to load()")
    image, label = features[image_key], features[label_key]
    shape = tuple(image.shape)
    if any(d is None for d in shape) or len(shape) not in (2, 3):
        raise LthError(f"tfds dataset {tfds_name}: feature {image_key!r} has shape {shape}; "
                       "lth_jax loads fixed-size images (H, W[, C]) only; pick another "
                       "dataset or a config with fixed-size images")
    num_classes = getattr(label, "num_classes", None)
    if not num_classes:
        raise LthError(f"tfds dataset {tfds_name}: feature {label_key!r} is not a class label "
                       "(no num_classes); pass label_key=... naming a ClassLabel feature")

    def read(split, limit, what):
        check_count(limit, what)
        try:
            source = tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=False)
        except Exception as e:
            if not builder.is_prepared():
                raise LthError(
                    f"tfds dataset {tfds_name} not found in data_dir {where} (looked in "
                    f"{builder.data_dir}); prepare it with tfds on a machine with internet "
                    "(file_format='array_record'), or point --config.data.data_dir at it") from None
            raise LthError(
                f"cannot read split {split!r} of tfds dataset {tfds_name} in {builder.data_dir}: "
                f"{_first_line(e)}; tfds.data_source needs the array_record file format "
                f"(re-prepare with file_format='array_record') and an existing split "
                f"(splits: {', '.join(builder.info.splits.keys()) or 'unknown'})") from None
        n = len(source)
        if limit is not None:
            if limit > n:
                raise LthError(f"{what}={limit} exceeds the {n} examples of split {split!r} of "
                               f"{tfds_name}; use at most {n}, or leave {what} out")
            n = limit
        x = np.empty((n,) + shape, np.float32)
        y = np.empty((n,), np.int32)
        for i in range(n):
            example = source[i]
            x[i] = example[image_key]
            y[i] = example[label_key]
        if np.dtype(image.np_dtype) == np.uint8:
            x /= 255.0
        return x if x.ndim == 4 else x[..., None], y

    x_train, y_train = read(train_split, num_train, "num_train")
    x_test, y_test = read(test_split, num_test, "num_test")
    augment = "crop_flip" if tfds_name.startswith(CROP_FLIP_PREFIXES) else None
    return Arrays(x_train, y_train, x_test, y_test, num_classes=int(num_classes), augment=augment)
