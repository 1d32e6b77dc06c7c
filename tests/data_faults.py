"""Writers of small good and bad data files in the course layout, for the loader tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SMALL_SIZES = {"train": 30, "valid": 10, "test": 8}


def small_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Return valid course arrays of SMALL_SIZES: uint8 pixels (N, 2304), int64 labels 0..6."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in SMALL_SIZES.items():
        arrays[f"inputs_{split}"] = rng.integers(0, 256, (n, 2304), dtype=np.uint8)
        arrays[f"target_{split}"] = np.arange(n, dtype=np.int64) % 7
    return arrays


def write_npz(path: Path, drop: tuple[str, ...] = (), **replace: np.ndarray) -> Path:
    """Write small_arrays() to `path`, without the keys in `drop` and with `replace` applied."""
    arrays = small_arrays()
    arrays.update(replace)
    for key in drop:
        del arrays[key]
    with open(path, "wb") as file:
        np.savez(file, **arrays)
    return path


def write_truncated(path: Path, keep_fraction: float = 0.5) -> Path:
    """Write a valid .npz file, then cut it to `keep_fraction` of its bytes."""
    write_npz(path)
    content = path.read_bytes()
    path.write_bytes(content[: int(len(content) * keep_fraction)])
    return path


class UnpicklingMarker:
    """An object whose unpickling creates `marker`, to prove that a loader never unpickled it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def write_pickled(path: Path, marker: Path) -> Path:
    """Write a course file whose target_train is an object array holding an UnpicklingMarker."""
    labels = np.empty(SMALL_SIZES["train"], dtype=object)
    labels[:] = [UnpicklingMarker(marker)] * len(labels)
    return write_npz(path, target_train=labels)
