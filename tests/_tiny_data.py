"""Tiny data sets in the layout of `tfd_sweep.data.Dataset`, for fast numerical tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfd_sweep.data import Dataset, load_npz

NUM_PIXELS = 2304
NUM_CLASSES = 7
REAL_DATA_FILE = Path(__file__).resolve().parents[2] / "shared/data/fer2013_tfdformat.npz"


def make_tiny_dataset(num_train: int = 40, num_valid: int = 12, num_test: int = 10, seed: int = 0) -> Dataset:
    """Return a learnable data set: each class is a fixed pixel pattern plus uniform noise."""
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(0.0, 1.0, size=(NUM_CLASSES, NUM_PIXELS))

    def split(num_samples: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, NUM_CLASSES, size=num_samples)
        noise = rng.uniform(0.0, 1.0, size=(num_samples, NUM_PIXELS))
        x = 0.6 * patterns[y] + 0.4 * noise
        return _read_only(x), _read_only(y.astype(np.int64))

    x_train, y_train = split(num_train)
    x_valid, y_valid = split(num_valid)
    x_test, y_test = split(num_test)
    return Dataset(
        name="tiny-test-set",
        source="built-in",
        sha256="0" * 64,
        synthetic=True,
        x_train=x_train,
        y_train=y_train,
        x_valid=x_valid,
        y_valid=y_valid,
        x_test=x_test,
        y_test=y_test,
    )


def load_real_dataset() -> Dataset | None:
    """Return the real facial-expression test file as a Dataset, or None when it is absent."""
    if not REAL_DATA_FILE.is_file():
        return None
    return load_npz(REAL_DATA_FILE)


def _read_only(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.flags.writeable = False
    return array
