"""Find, load and check the course data file, or fall back to the built-in synthetic faces.

The course file `toronto_face.npz` contains six arrays: `inputs_{train,valid,test}`, one 48x48
grayscale image per row, shape (N, 2304), and `target_{train,valid,test}`, integer labels 0..6
(anger, disgust, fear, happy, sad, surprise, neutral), shape (N,) or (N, 1).

Search order: `data.path` when given (relative paths start at the directory the command was
started from), else `./toronto_face.npz`, else `./data/toronto_face.npz`. When none exists, the
built-in synthetic faces of `tfd_sweep.synthetic` are used, with a WARNING in the log.
`data.path=builtin` selects them on purpose.

Pixel rule:
- uint8 pixels are divided by 255.
- float pixels (float16, float32, float64) are used as they are when every value lies in
  [0, 1]. Values outside [0, 1] raise DataError with the range found, because a float file
  holding 0..255 would otherwise train on inputs 255 times too large without any sign.
- Other pixel dtypes (int64, bool, ...) raise DataError that names the conversion to uint8.

Labels may be any integer dtype, or floats holding whole numbers (converted to int64). The file
is opened with pickles disallowed, so an object array is rejected and never unpickled. Every
problem with a file raises DataError naming the file, the key, what was expected, what was found
and the fix; all problems found in one file are listed together.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfd_sweep.errors import DataError
from tfd_sweep.metrics import SPLITS

logger = logging.getLogger(__name__)

BUILTIN = "builtin"  # data.path value that forces the built-in synthetic data
DEFAULT_FILE_NAME = "toronto_face.npz"
IMAGE_SIDE = 48
NUM_PIXELS = IMAGE_SIDE * IMAGE_SIDE  # D = 2304
NUM_CLASSES = 7  # C
CLASS_NAMES = ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral")

_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"
_NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True, eq=False)
class Dataset:
    """The three splits of a face-expression data set, ready for training.

    Inputs are (N, D) float arrays with D = 2304 and values in [0, 1]; labels are (N,) int64
    arrays with values 0..6. All arrays are C-contiguous and read-only.
    """

    name: str  # file stem such as "toronto_face", or "synthetic-faces" for the built-in data
    source: str  # absolute path of the file, or "built-in"
    sha256: str  # of the file bytes; for built-in data, of the generated arrays
    synthetic: bool
    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def astype(self, dtype: str) -> Dataset:
        """Return the data set with inputs converted to `dtype` ("float64" or "float32")."""
        if dtype not in ("float64", "float32"):
            raise ValueError(f"dtype == {dtype!r}, must be 'float64' or 'float32'")
        if self.x_train.dtype == np.dtype(dtype):
            return self
        converted = {f"x_{split}": _read_only(getattr(self, f"x_{split}").astype(dtype)) for split in SPLITS}
        return dataclasses.replace(self, **converted)

    def sizes(self) -> dict[str, int]:
        """Return the number of images per split, e.g. {"train": 3374, "valid": 419, "test": 385}."""
        return {split: len(getattr(self, f"y_{split}")) for split in SPLITS}


def find_data_file(path: str | None, start_dir: Path) -> Path | None:
    """Return the data file to load, or None when no path is given and none is found.

    A given `path` is taken relative to `start_dir` and must name an existing file. Without a
    path, `start_dir/toronto_face.npz` and then `start_dir/data/toronto_face.npz` are tried.
    """
    start_dir = Path(start_dir)
    if path is None:
        for candidate in _default_candidates(start_dir):
            if candidate.is_file():
                return candidate.resolve()
        return None

    if not str(path).strip():
        raise DataError(
            "data.path is empty. Give the path of toronto_face.npz (data.path=/path/to/toronto_face.npz), "
            f"leave it null to search ./{DEFAULT_FILE_NAME} and ./data/{DEFAULT_FILE_NAME}, "
            f"or use data.path={BUILTIN} for the built-in synthetic faces."
        )
    file = (start_dir / Path(path).expanduser()).resolve()
    if file.is_dir():
        raise DataError(
            f"data.path={path} is a directory ({file}); expected an .npz file. "
            f"Give the file itself, e.g. data.path={Path(path) / DEFAULT_FILE_NAME}."
        )
    if not file.is_file():
        raise DataError(
            f"Data file not found: data.path={path} (looked for {file}). "
            "Check the path; relative paths start at the directory the command was started from."
        )
    return file


def load_dataset(path: str | None, start_dir: Path) -> Dataset:
    """Load the data set named by `path` (a file, None to search, or BUILTIN) and check it.

    Raises DataError for a missing or malformed file. Falls back to the built-in synthetic
    faces, with a WARNING, when `path` is None and no course file is found.
    """
    # Imported here because synthetic.py imports Dataset from this module.
    from tfd_sweep.synthetic import make_synthetic_dataset

    start_dir = Path(start_dir)
    if path is not None and str(path).strip().lower() == BUILTIN:
        logger.warning(
            "data.path=%s: training on the built-in synthetic faces, not real photos. "
            "To use real data, pass data.path=/path/to/%s.",
            BUILTIN,
            DEFAULT_FILE_NAME,
        )
        return make_synthetic_dataset()

    file = find_data_file(path, start_dir)
    if file is None:
        searched = " and ".join(str(candidate.resolve()) for candidate in _default_candidates(start_dir))
        logger.warning(
            "No data file given and %s not found (looked for %s). "
            "Training on the built-in synthetic faces, not real photos. "
            "To use real data, pass data.path=/path/to/%s.",
            DEFAULT_FILE_NAME,
            searched,
            DEFAULT_FILE_NAME,
        )
        return make_synthetic_dataset()

    logger.info("Loading %s", file)
    return load_npz(file)


def load_npz(file: Path) -> Dataset:
    """Load and check one .npz file in the course layout (see the module docstring)."""
    file = Path(file).resolve()
    try:
        content = file.read_bytes()
    except OSError as error:
        raise DataError(f"Cannot read data file {file}: {error.strerror or error}.") from error

    arrays = _read_arrays(file, content)
    problems: list[str] = []
    splits: dict[str, np.ndarray] = {}
    for split in SPLITS:
        x = _check_inputs(arrays[f"inputs_{split}"], f"inputs_{split}", problems)
        y = _check_labels(arrays[f"target_{split}"], f"target_{split}", problems)
        if x is not None and y is not None and len(x) != len(y):
            problems.append(
                f"inputs_{split} has {len(x)} images but target_{split} has {len(y)} labels; "
                "expected one label per image. Store matching arrays for this split."
            )
        splits[f"x_{split}"] = x
        splits[f"y_{split}"] = y
    if problems:
        raise DataError(_format_problems(file, problems))

    return Dataset(
        name=file.stem,
        source=str(file),
        sha256=hashlib.sha256(content).hexdigest(),
        synthetic=False,
        **{key: _read_only(value) for key, value in splits.items()},
    )


def _default_candidates(start_dir: Path) -> tuple[Path, Path]:
    return start_dir / DEFAULT_FILE_NAME, start_dir / "data" / DEFAULT_FILE_NAME


def _read_only(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.flags.writeable = False
    return array


def _format_problems(file: Path, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"Invalid data file {file}: {problems[0]}"
    listed = "\n".join(f"  - {problem}" for problem in problems)
    return f"Invalid data file {file} ({len(problems)} problems):\n{listed}"


def _read_arrays(file: Path, content: bytes) -> dict[str, np.ndarray]:
    """Read the six course arrays from the file's bytes, with pickles disallowed."""
    if not content:
        raise DataError(f"Invalid data file {file}: the file is empty (0 bytes). Copy the .npz file again.")
    if content.startswith(_NPY_MAGIC):
        raise DataError(
            f"Invalid data file {file}: it contains a single .npy array, not an .npz archive with the keys "
            f"{', '.join(_required_keys())}. Save the arrays with np.savez(path, inputs_train=..., ...)."
        )
    if not content.startswith((_ZIP_MAGIC, _EMPTY_ZIP_MAGIC)):
        raise DataError(
            f"Invalid data file {file}: not an .npz archive (not a zip file; it starts with {content[:8]!r}). "
            "Give the course's toronto_face.npz, or save the arrays with np.savez."
        )

    try:
        archive = np.load(io.BytesIO(content), allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as error:
        raise DataError(
            f"Invalid data file {file}: the zip archive cannot be read ({error}); the file is probably truncated "
            f"or damaged ({len(content)} bytes). Copy or download it again."
        ) from error

    with archive:
        keys = set(archive.files)
        missing = [key for key in _required_keys() if key not in keys]
        if missing:
            raise DataError(
                f"Invalid data file {file}: missing key(s) {', '.join(missing)}; expected the keys "
                f"{', '.join(_required_keys())}, found {', '.join(sorted(keys)) or 'no arrays'}. "
                "Save the arrays under these names with np.savez."
            )
        return {key: _read_member(file, archive, key) for key in _required_keys()}


def _read_member(file: Path, archive, key: str) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise DataError(
                f"Invalid data file {file}: {key} is an object array, which could only be read by unpickling "
                "it, and pickles are not loaded because they can run code. Store it as a numeric array "
                "(uint8 pixels, integer labels) with np.savez."
            ) from error
        raise DataError(f"Invalid data file {file}: {key} cannot be read ({error}). Copy the file again.") from error
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as error:
        raise DataError(
            f"Invalid data file {file}: {key} cannot be read ({error}); the file is probably truncated or "
            "damaged. Copy or download it again."
        ) from error


def _required_keys() -> list[str]:
    return [f"{kind}_{split}" for kind in ("inputs", "target") for split in SPLITS]


def _check_inputs(x: np.ndarray, key: str, problems: list[str]) -> np.ndarray | None:
    """Return the (N, D) float64 pixels in [0, 1], or None after appending the problems found."""
    if x.ndim != 2 or x.shape[1] != NUM_PIXELS:
        problems.append(_describe_input_shape(x, key))
        return None
    if x.shape[0] == 0:
        problems.append(f"{key} is empty, shape {x.shape}; expected at least one image in this split.")
        return None

    if x.dtype == np.uint8:
        return x.astype(np.float64) / 255.0
    if not np.issubdtype(x.dtype, np.floating):
        problems.append(
            f"{key} has dtype {x.dtype}; expected uint8 pixels 0..255 or floats in [0, 1]. "
            f"If the values are 0..255, store {key}.astype(np.uint8)."
        )
        return None

    finite = np.isfinite(x)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        problems.append(
            f"{key} has {np.count_nonzero(np.isnan(x))} NaN and {np.count_nonzero(np.isinf(x))} infinite pixel "
            f"values in {len(bad_rows)} image(s) (first at row {bad_rows[0]}); expected finite values in [0, 1]. "
            "Repair or drop those images."
        )
        return None
    low, high = float(x.min()), float(x.max())
    if low < 0.0 or high > 1.0:
        fix = "divide by 255 or store uint8 pixels" if high > 1.0 else "rescale the pixels to [0, 1]"
        problems.append(
            f"{key} has float pixels in [{low:g}, {high:g}]; expected floats in [0, 1] or uint8 0..255. "
            f"To use it, {fix}."
        )
        return None
    return x.astype(np.float64)


def _describe_input_shape(x: np.ndarray, key: str) -> str:
    expected = f"expected one image per row, shape (N, {NUM_PIXELS}) for {IMAGE_SIDE}x{IMAGE_SIDE} pixels"
    if x.ndim == 2 and x.shape[0] == NUM_PIXELS:
        return (
            f"{key} has shape {x.shape}, which looks like one image per column; {expected}. "
            f"Store the transpose, {key}.T."
        )
    if x.ndim == 3 and x.shape[1:] == (IMAGE_SIDE, IMAGE_SIDE):
        return f"{key} has shape {x.shape}; {expected}. Store {key}.reshape(len({key}), {NUM_PIXELS})."
    if x.ndim == 2:
        return (
            f"{key} has shape {x.shape}, i.e. {x.shape[1]} pixels per image; {expected}. "
            f"Resize the images to {IMAGE_SIDE}x{IMAGE_SIDE} grayscale."
        )
    return f"{key} has shape {x.shape}; {expected}."


def _check_labels(y: np.ndarray, key: str, problems: list[str]) -> np.ndarray | None:
    """Return the (N,) int64 labels in 0..C-1, or None after appending the problems found."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2 and y.shape[1] == NUM_CLASSES:
        problems.append(
            f"{key} has shape {y.shape}, which looks like one-hot labels; expected class indices, shape (N,). "
            f"Store {key}.argmax(axis=1)."
        )
        return None
    if y.ndim != 1:
        problems.append(f"{key} has shape {y.shape}; expected class indices of shape (N,) or (N, 1).")
        return None
    if y.shape[0] == 0:
        problems.append(f"{key} is empty, shape {y.shape}; expected at least one label in this split.")
        return None

    if np.issubdtype(y.dtype, np.floating):
        if not (np.isfinite(y).all() and (y == np.round(y)).all()):
            problems.append(
                f"{key} has dtype {y.dtype} with non-integer values; expected integer class indices "
                f"0..{NUM_CLASSES - 1}."
            )
            return None
    elif not np.issubdtype(y.dtype, np.integer):
        problems.append(f"{key} has dtype {y.dtype}; expected integer class indices 0..{NUM_CLASSES - 1}.")
        return None

    low, high = y.min(), y.max()
    if low >= 1 and high == NUM_CLASSES:
        problems.append(
            f"{key} has labels 1..{NUM_CLASSES}, the original TFD numbering; expected 0..{NUM_CLASSES - 1}. "
            f"Subtract 1: store {key} - 1."
        )
        return None
    if low < 0 or high > NUM_CLASSES - 1:
        outside = np.unique(y[(y < 0) | (y > NUM_CLASSES - 1)])
        found = ", ".join(str(int(value)) for value in outside[:10])
        if len(outside) > 10:
            found += ", ..."

        problems.append(
            f"{key} has labels outside 0..{NUM_CLASSES - 1} (found {found}); expected one of the "
            f"{NUM_CLASSES} classes {', '.join(f'{i} {name}' for i, name in enumerate(CLASS_NAMES))}."
        )
        return None
    return y.astype(np.int64)
