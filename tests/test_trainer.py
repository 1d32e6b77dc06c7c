"""The single-run training loop: numbers, determinism, divergence, dtypes and results."""

import warnings

import numpy as np
import pytest
from _tiny_data import load_real_dataset, make_tiny_dataset

from tfd_sweep import gradcheck, metrics, model, optim, trainer
from tfd_sweep.errors import ConfigError


def make_spec(**overrides) -> trainer.RunSpec:
    values = dict(eps=0.05, momentum=0.5, batch_size=7, num_epochs=3, num_hiddens=(8, 6), seed=0)
    values.update(overrides)
    return trainer.RunSpec(**values)


def train_reference(spec: trainer.RunSpec, data) -> tuple[dict, list]:
    """Train with the readable model/optim functions, as the course's loop does."""
    rng = np.random.default_rng(spec.seed)
    params = model.init_params(spec.num_hiddens, rng)
    velocities = optim.init_velocities(params)
    num_train = len(data.y_train)
    batch_size = num_train if spec.batch_size == -1 else spec.batch_size
    train_ces = []
    for _ in range(spec.num_epochs):
        perm = rng.permutation(num_train)
        weighted_ce = 0.0
        for start in range(0, num_train, batch_size):
            batch = perm[start : start + batch_size]
            loss, grads = model.loss_and_grads(params, data.x_train[batch], data.y_train[batch])
            weighted_ce += loss * len(batch)
            optim.momentum_step(params, velocities, grads, spec.eps, spec.momentum)
        train_ces.append(weighted_ce / num_train)
    return params, train_ces


@pytest.mark.parametrize("batch_size", [1, 7, -1])
def test_train_matches_reference_loop(batch_size):
    data = make_tiny_dataset()
    spec = make_spec(batch_size=batch_size)
    result = trainer.train(spec, data)
    expected_params, expected_ces = train_reference(spec, data)

    for name in model.PARAM_NAMES:
        np.testing.assert_allclose(result.params[name], expected_params[name], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(result.history["train_ce"], expected_ces, rtol=1e-10)
    valid_ce, valid_acc = model.evaluate(expected_params, data.x_valid, data.y_valid)
    assert result.final["valid_ce"] == pytest.approx(valid_ce, rel=1e-10)
    assert result.final["valid_acc"] == valid_acc


def test_result_has_every_metric_and_history_column():
    spec = make_spec()
    result = trainer.train(spec, make_tiny_dataset())
    assert result.status == metrics.STATUS_OK
    assert set(result.history) == set(metrics.HISTORY_COLUMNS)
    np.testing.assert_array_equal(result.history["epoch"], [1, 2, 3])
    assert set(result.final) == set(metrics.FINAL_METRICS)
    assert set(result.best) == set(metrics.BEST_METRICS)
    best = int(np.argmin(result.history["valid_ce"]))
    assert result.best["best_epoch"] == best + 1
    assert result.best["best_valid_ce"] == result.history["valid_ce"][best]
    assert result.params["W1"].shape == (2304, 8)
    assert result.params["W1"].flags.c_contiguous
    assert result.diverged_epoch is None
    assert result.grad_check is None
    assert result.wall_time > 0


def test_loss_falls_on_synthetic_set():
    result = trainer.train(make_spec(eps=0.01, momentum=0.9, batch_size=5, num_epochs=25), make_tiny_dataset())
    train_ce = result.history["train_ce"]
    assert train_ce[-1] < 0.5 * train_ce[0]
    assert result.final["train_acc"] > 0.8


def test_same_seed_gives_identical_history():
    data = make_tiny_dataset()
    first = trainer.train(make_spec(), data)
    second = trainer.train(make_spec(), data)
    for column in metrics.HISTORY_COLUMNS:
        np.testing.assert_array_equal(first.history[column], second.history[column])
    np.testing.assert_array_equal(first.params["W1"], second.params["W1"])


def test_different_seeds_give_different_histories():
    data = make_tiny_dataset()
    first = trainer.train(make_spec(seed=0), data)
    second = trainer.train(make_spec(seed=1), data)
    assert not np.array_equal(first.history["train_ce"], second.history["train_ce"])


@pytest.mark.parametrize("eps", [1.0, 1e6])
def test_divergence_stops_run_without_warnings(eps):
    spec = make_spec(eps=eps, momentum=0.9, batch_size=1, num_epochs=5, num_hiddens=(32, 32), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = trainer.train(spec, make_tiny_dataset())
    assert result.status == metrics.STATUS_DIVERGED
    assert result.diverged_epoch == 1
    assert len(result.history["epoch"]) == 1
    assert not result.history["train_ce"][0] <= spec.max_ce


def test_on_epoch_receives_every_row():
    rows = []
    result = trainer.train(make_spec(), make_tiny_dataset(), on_epoch=lambda epoch, row: rows.append((epoch, row)))
    assert [epoch for epoch, _ in rows] == [1, 2, 3]
    assert rows[-1][1]["valid_ce"] == result.history["valid_ce"][-1]
    assert set(rows[0][1]) == set(metrics.HISTORY_COLUMNS)


def test_check_grad_records_errors_without_changing_training():
    data = make_tiny_dataset()
    checked = trainer.train(make_spec(check_grad=True), data)
    unchecked = trainer.train(make_spec(check_grad=False), data)
    assert set(checked.grad_check) == set(model.PARAM_NAMES)
    assert max(checked.grad_check.values()) < gradcheck.GRAD_CHECK_TOLERANCE
    np.testing.assert_array_equal(checked.history["train_ce"], unchecked.history["train_ce"])


def test_failed_grad_check_returns_failed_status(monkeypatch):
    monkeypatch.setattr(gradcheck, "GRAD_CHECK_TOLERANCE", 0.0)
    result = trainer.train(make_spec(check_grad=True), make_tiny_dataset())
    assert result.status == metrics.STATUS_FAILED
    assert result.error.startswith("Gradient check failed: the analytic gradient of ")
    assert "check_grad=false skips the check" in result.error
    assert len(result.history["epoch"]) == 0
    assert result.best["best_epoch"] is None


def test_float32_runs_close_to_float64():
    data = make_tiny_dataset()
    result64 = trainer.train(make_spec(), data)
    result32 = trainer.train(make_spec(dtype="float32"), data)
    assert result32.params["W1"].dtype == np.float32
    assert result32.status == metrics.STATUS_OK
    np.testing.assert_allclose(result32.history["train_ce"], result64.history["train_ce"], rtol=1e-4)
    np.testing.assert_allclose(result32.final["test_ce"], result64.final["test_ce"], rtol=1e-4)


def test_group_key_lists_shared_settings():
    spec = make_spec(num_hiddens=[8, 6])
    assert spec.num_hiddens == (8, 6)
    assert spec.group_key() == (7, (8, 6), 3, 0, "float64")
    assert make_spec(eps=0.5).group_key() == spec.group_key()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"batch_size": 0}, "batch_size == 0, must be >= 1 or -1 for the full set"),
        ({"num_epochs": 0}, "num_epochs == 0, must be >= 1"),
        ({"dtype": "float16"}, "dtype == 'float16', must be one of ('float64', 'float32')"),
        ({"num_hiddens": (0, 3)}, "num_hiddens == [0, 3], must be two sizes >= 1, e.g. [16, 32]"),
    ],
)
def test_run_spec_rejects_invalid_values(overrides, message):
    with pytest.raises(ConfigError) as error:
        make_spec(**overrides)
    assert message in str(error.value)


def test_one_epoch_on_real_data():
    data = load_real_dataset()
    if data is None:
        pytest.skip("real data file fer2013_tfdformat.npz not found next to the repository")
    result = trainer.train(make_spec(eps=0.01, momentum=0.9, batch_size=100, num_epochs=1, num_hiddens=(16, 32)), data)
    assert result.status == metrics.STATUS_OK
    assert 0.5 < result.final["train_ce"] < 2.5


def test_momentum_update_follows_formula():
    rng = np.random.default_rng(0)
    w, v, grad = rng.standard_normal(5), rng.standard_normal(5), rng.standard_normal(5)
    expected_v = 0.9 * v - 0.01 * grad
    expected_w = w + expected_v
    optim.momentum_update(w, v, grad, eps=0.01, momentum=0.9)
    np.testing.assert_array_equal(v, expected_v)
    np.testing.assert_array_equal(w, expected_w)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_flush_subnormals_zeroes_only_subnormals(dtype):
    tiny = np.finfo(dtype).tiny
    v = np.array([tiny / 4, -tiny / 2, tiny, -2 * tiny, 0.5, np.inf], dtype=dtype)
    optim.flush_subnormals(v)
    np.testing.assert_array_equal(v, np.array([0, 0, tiny, -2 * tiny, 0.5, np.inf], dtype=dtype))
