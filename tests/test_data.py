"""Tests of the data file search, the loader's checks and the built-in synthetic faces."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest

from data_faults import SMALL_SIZES, small_arrays, write_npz, write_pickled, write_truncated
from tfd_sweep.data import BUILTIN, Dataset, find_data_file, load_dataset
from tfd_sweep.errors import DataError, UserError
from tfd_sweep.synthetic import CLASS_COUNTS, make_synthetic_dataset, make_synthetic_faces

REAL_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013_tfdformat.npz"
COURSE_SIZES = {"train": 3374, "valid": 419, "test": 385}


@pytest.fixture(scope="module")
def synthetic() -> Dataset:
    """The built-in data set for seed 0, generated once for the tests that only read it."""
    return make_synthetic_dataset(0)


def load_error(path: Path) -> str:
    """Load `path` and return the DataError message it raises."""
    with pytest.raises(DataError) as caught:
        load_dataset(str(path), path.parent)
    return str(caught.value)


# --- loading a good file ---------------------------------------------------------------------


def test_load_small_file_values(tmp_path):
    file = write_npz(tmp_path / "faces.npz")
    arrays = small_arrays()

    data = load_dataset(str(file), tmp_path)

    assert data.name == "faces"
    assert data.source == str(file.resolve())
    assert data.sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
    assert data.synthetic is False
    assert data.sizes() == SMALL_SIZES
    for split in ("train", "valid", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        assert x.dtype == np.float64
        assert y.dtype == np.int64
        np.testing.assert_array_equal(x, arrays[f"inputs_{split}"] / 255.0)
        np.testing.assert_array_equal(y, arrays[f"target_{split}"])


def test_load_arrays_read_only_contiguous(tmp_path):
    data = load_dataset(str(write_npz(tmp_path / "faces.npz")), tmp_path)

    for array in (data.x_train, data.y_train, data.x_valid, data.y_valid, data.x_test, data.y_test):
        assert array.flags.c_contiguous
        assert not array.flags.writeable
    with pytest.raises(ValueError):
        data.x_train[0, 0] = 1.0


def test_load_float_pixels_in_unit_range_as_is(tmp_path):
    pixels = np.linspace(0.0, 1.0, 30 * 2304, dtype=np.float32).reshape(30, 2304)
    file = write_npz(tmp_path / "faces.npz", inputs_train=pixels)

    data = load_dataset(str(file), tmp_path)

    np.testing.assert_array_equal(data.x_train, pixels.astype(np.float64))


def test_load_labels_as_column_or_whole_floats(tmp_path):
    labels = (np.arange(30) % 7).reshape(30, 1)
    file = write_npz(tmp_path / "faces.npz", target_train=labels, target_valid=np.arange(10.0) % 7)

    data = load_dataset(str(file), tmp_path)

    assert data.y_train.shape == (30,)
    assert data.y_valid.dtype == np.int64
    np.testing.assert_array_equal(data.y_valid, np.arange(10) % 7)


def test_astype_float32_converts_inputs_only(tmp_path):
    data = load_dataset(str(write_npz(tmp_path / "faces.npz")), tmp_path)

    single = data.astype("float32")

    assert single.x_train.dtype == np.float32
    assert single.x_test.dtype == np.float32
    assert single.y_train is data.y_train
    assert not single.x_valid.flags.writeable
    assert single.sha256 == data.sha256
    assert data.astype("float64") is data
    with pytest.raises(ValueError, match="float16"):
        data.astype("float16")


@pytest.mark.skipif(not REAL_FILE.is_file(), reason=f"real stand-in data file not found at {REAL_FILE}")
def test_load_real_stand_in_file():
    data = load_dataset(str(REAL_FILE), Path.cwd())

    assert data.name == "fer2013_tfdformat"
    assert data.synthetic is False
    assert data.sizes() == COURSE_SIZES
    assert data.sha256 == hashlib.sha256(REAL_FILE.read_bytes()).hexdigest()
    assert data.x_train.min() >= 0.0
    assert data.x_train.max() <= 1.0
    assert set(np.unique(data.y_train)) == set(range(7))


# --- search order -------------------------------------------------------------------------------


def test_find_prefers_given_path(tmp_path):
    write_npz(tmp_path / "toronto_face.npz")
    given = write_npz(tmp_path / "other.npz")

    assert find_data_file("other.npz", tmp_path) == given.resolve()


def test_find_prefers_start_dir_over_data_dir(tmp_path):
    (tmp_path / "data").mkdir()
    write_npz(tmp_path / "data" / "toronto_face.npz")
    top = write_npz(tmp_path / "toronto_face.npz")

    assert find_data_file(None, tmp_path) == top.resolve()


def test_find_falls_back_to_data_dir(tmp_path):
    (tmp_path / "data").mkdir()
    nested = write_npz(tmp_path / "data" / "toronto_face.npz")

    assert find_data_file(None, tmp_path) == nested.resolve()


def test_find_returns_none_without_file(tmp_path):
    assert find_data_file(None, tmp_path) is None


def test_find_missing_given_file(tmp_path):
    with pytest.raises(DataError) as caught:
        find_data_file("nowhere/toronto_face.npz", tmp_path)

    message = str(caught.value)
    assert "not found" in message
    assert "data.path=nowhere/toronto_face.npz" in message
    assert str(tmp_path / "nowhere" / "toronto_face.npz") in message


def test_find_given_directory(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        find_data_file(str(tmp_path), tmp_path)


def test_find_empty_path(tmp_path):
    with pytest.raises(DataError, match="data.path is empty"):
        find_data_file("", tmp_path)


def test_data_error_is_user_error():
    assert issubclass(DataError, UserError)


# --- built-in data ------------------------------------------------------------------------------


def test_load_without_file_uses_builtin_and_warns(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="tfd_sweep.data"):
        data = load_dataset(None, tmp_path)

    assert data.synthetic is True
    assert data.name == "synthetic-faces"
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "built-in synthetic faces" in warnings[0]
    assert str(tmp_path / "toronto_face.npz") in warnings[0]
    assert str(tmp_path / "data" / "toronto_face.npz") in warnings[0]
    assert "data.path=/path/to/toronto_face.npz" in warnings[0]


def test_load_builtin_keyword_warns(tmp_path, caplog):
    write_npz(tmp_path / "toronto_face.npz")

    with caplog.at_level(logging.WARNING, logger="tfd_sweep.data"):
        data = load_dataset(BUILTIN, tmp_path)

    assert data.synthetic is True
    assert "built-in synthetic faces" in caplog.text


def test_synthetic_is_deterministic(synthetic):
    first, second = make_synthetic_faces(seed=0), make_synthetic_faces(seed=0)

    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    np.testing.assert_array_equal(synthetic.x_train, first["inputs_train"] / 255.0)
    assert make_synthetic_dataset(0).sha256 == synthetic.sha256


def test_synthetic_seed_changes_images(synthetic):
    other = make_synthetic_dataset(1)

    assert not np.array_equal(synthetic.x_train, other.x_train)
    assert synthetic.sha256 != other.sha256


def test_synthetic_layout_and_class_counts():
    arrays = make_synthetic_faces()

    for split, size in COURSE_SIZES.items():
        x, y = arrays[f"inputs_{split}"], arrays[f"target_{split}"]
        assert x.shape == (size, 2304)
        assert x.dtype == np.uint8
        assert y.shape == (size,)
        assert y.dtype == np.int64
        assert y.min() == 0
        assert y.max() == 6
        np.testing.assert_array_equal(np.bincount(y, minlength=7), CLASS_COUNTS[split])


def test_synthetic_dataset_fields(synthetic):
    data = synthetic

    assert isinstance(data, Dataset)
    assert data.source == "built-in"
    assert data.sizes() == COURSE_SIZES
    assert data.x_train.dtype == np.float64
    assert data.x_train.min() >= 0.0
    assert data.x_train.max() <= 1.0
    assert not data.x_valid.flags.writeable
    assert data.x_valid.flags.c_contiguous
    assert not data.y_test.flags.writeable


def test_synthetic_learnable_not_trivial(synthetic):
    """A ridge regression on 24x24 pooled pixels must beat the majority class but not be perfect."""
    data = synthetic

    def features(x):
        pooled = x.reshape(-1, 24, 2, 24, 2).mean(axis=(2, 4)).reshape(len(x), -1)
        return np.hstack([pooled, np.ones((len(x), 1))])

    x_train, x_valid = features(data.x_train), features(data.x_valid)
    targets = np.eye(7)[data.y_train]
    weights = np.linalg.solve(x_train.T @ x_train + 10.0 * np.eye(x_train.shape[1]), x_train.T @ targets)
    valid_acc = np.mean((x_valid @ weights).argmax(axis=1) == data.y_valid)
    majority_acc = np.bincount(data.y_valid).max() / len(data.y_valid)

    assert valid_acc > majority_acc + 0.15
    assert valid_acc < 0.95


# --- bad files ----------------------------------------------------------------------------------


def test_reject_missing_file(tmp_path):
    with pytest.raises(DataError) as caught:
        load_dataset("missing.npz", tmp_path)

    assert "Data file not found" in str(caught.value)
    assert str(tmp_path / "missing.npz") in str(caught.value)


def test_reject_empty_file(tmp_path):
    file = tmp_path / "faces.npz"
    file.write_bytes(b"")

    assert "the file is empty (0 bytes)" in load_error(file)


def test_reject_not_a_zip(tmp_path):
    file = tmp_path / "faces.npz"
    file.write_text("inputs_train,target_train\n1,2\n")

    message = load_error(file)
    assert str(file) in message
    assert "not an .npz archive (not a zip file" in message


def test_reject_single_npy_array(tmp_path):
    file = tmp_path / "faces.npz"
    with open(file, "wb") as stream:
        np.save(stream, np.zeros((3, 2304), dtype=np.uint8))

    assert "a single .npy array, not an .npz archive" in load_error(file)


@pytest.mark.parametrize("keep_fraction", [0.5, 0.99])
def test_reject_truncated_file(tmp_path, keep_fraction):
    file = write_truncated(tmp_path / "faces.npz", keep_fraction)

    message = load_error(file)
    assert str(file) in message
    assert "truncated or damaged" in message


def test_reject_pickled_object_array_unopened(tmp_path):
    marker = tmp_path / "unpickled"
    file = write_pickled(tmp_path / "faces.npz", marker)

    message = load_error(file)
    assert "target_train is an object array" in message
    assert "pickles are not loaded" in message
    assert not marker.exists()


def test_reject_missing_key(tmp_path):
    file = write_npz(tmp_path / "faces.npz", drop=("target_valid",))

    message = load_error(file)
    assert "missing key(s) target_valid" in message
    assert "found inputs_test, inputs_train, inputs_valid, target_test, target_train" in message


def test_reject_wrong_pixel_count(tmp_path):
    file = write_npz(tmp_path / "faces.npz", inputs_valid=np.zeros((10, 1024), dtype=np.uint8))

    message = load_error(file)
    assert "inputs_valid has shape (10, 1024), i.e. 1024 pixels per image" in message
    assert "shape (N, 2304)" in message
    assert "Resize the images to 48x48 grayscale" in message


def test_reject_images_one_per_column(tmp_path):
    file = write_npz(tmp_path / "faces.npz", inputs_train=np.zeros((2304, 30), dtype=np.uint8))

    message = load_error(file)
    assert "inputs_train has shape (2304, 30), which looks like one image per column" in message
    assert "Store the transpose, inputs_train.T" in message


def test_reject_image_stack(tmp_path):
    file = write_npz(tmp_path / "faces.npz", inputs_test=np.zeros((8, 48, 48), dtype=np.uint8))

    assert "inputs_test.reshape(len(inputs_test), 2304)" in load_error(file)


def test_reject_labels_one_to_seven(tmp_path):
    file = write_npz(tmp_path / "faces.npz", target_train=np.arange(30) % 7 + 1)

    message = load_error(file)
    assert "target_train has labels 1..7, the original TFD numbering; expected 0..6" in message
    assert "Subtract 1" in message


def test_reject_labels_out_of_range(tmp_path):
    labels = np.arange(10) % 7
    labels[[2, 5]] = [-1, 9]
    file = write_npz(tmp_path / "faces.npz", target_valid=labels)

    message = load_error(file)
    assert "target_valid has labels outside 0..6 (found -1, 9)" in message
    assert "0 anger" in message


def test_reject_one_hot_labels(tmp_path):
    file = write_npz(tmp_path / "faces.npz", target_test=np.eye(7)[np.arange(8) % 7])

    assert "looks like one-hot labels" in load_error(file)


def test_reject_fractional_labels(tmp_path):
    file = write_npz(tmp_path / "faces.npz", target_test=np.full(8, 0.5))

    assert "target_test has dtype float64 with non-integer values" in load_error(file)


@pytest.mark.parametrize("bad_value, word", [(np.nan, "1 NaN"), (np.inf, "1 infinite")])
def test_reject_non_finite_pixels(tmp_path, bad_value, word):
    pixels = np.full((30, 2304), 0.5)
    pixels[3, 7] = bad_value
    file = write_npz(tmp_path / "faces.npz", inputs_train=pixels)

    message = load_error(file)
    assert word in message
    assert "in 1 image(s) (first at row 3)" in message


def test_reject_float_pixels_above_one(tmp_path):
    file = write_npz(tmp_path / "faces.npz", inputs_train=np.linspace(0.0, 255.0, 30 * 2304).reshape(30, 2304))

    message = load_error(file)
    assert "inputs_train has float pixels in [0, 255]" in message
    assert "divide by 255 or store uint8 pixels" in message


def test_reject_integer_pixels_not_uint8(tmp_path):
    file = write_npz(tmp_path / "faces.npz", inputs_train=np.zeros((30, 2304), dtype=np.int64))

    message = load_error(file)
    assert "inputs_train has dtype int64" in message
    assert "inputs_train.astype(np.uint8)" in message


def test_reject_empty_split(tmp_path):
    file = write_npz(
        tmp_path / "faces.npz",
        inputs_test=np.zeros((0, 2304), dtype=np.uint8),
        target_test=np.zeros(0, dtype=np.int64),
    )

    message = load_error(file)
    assert "inputs_test is empty, shape (0, 2304)" in message
    assert "target_test is empty" in message


def test_reject_mismatched_counts(tmp_path):
    file = write_npz(tmp_path / "faces.npz", target_valid=np.arange(9) % 7)

    assert "inputs_valid has 10 images but target_valid has 9 labels" in load_error(file)


def test_reject_lists_every_problem(tmp_path):
    file = write_npz(
        tmp_path / "faces.npz",
        inputs_train=np.zeros((2304, 30), dtype=np.uint8),
        target_test=np.arange(8) % 7 + 1,
    )

    message = load_error(file)
    assert "(2 problems)" in message
    assert "inputs_train" in message
    assert "target_test" in message
