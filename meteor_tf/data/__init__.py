"""Data: the embedded night-sky dataset, capture folders, preprocessing, tf.data pipelines, augmentation,
folds and Fashion-MNIST.

Submodules are imported where used (`from meteor_tf.data import dataset`): importing `night_sky` registers a
tfds builder and `fashion_mnist` imports tfds, which a serving process does not need.
"""


class DataError(Exception):
    """Base of the data errors a user fixes by changing `--data`/`--class_dirs` or their files (main reports them)."""


class DataLayoutError(DataError, ValueError):
    """The data has the wrong shape: an empty class, a single class, unusable class folder names."""


class DataNotFoundError(DataError, FileNotFoundError):
    """The data folder or one of its class folders does not exist."""
