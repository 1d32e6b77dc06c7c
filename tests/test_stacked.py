"""Stacked training of a group of runs equals training each run alone."""

import dataclasses
import importlib.util
import sys
import warnings

import numpy as np
import pytest
from _tiny_data import make_tiny_dataset

from tfd_sweep import gradcheck, metrics, model, stacked, trainer

KERNELS = ["numpy"] + (["numba"] if importlib.util.find_spec("numba") else [])
# The numba kernels add up their matrix products in their own order, so their runs differ from
# train() by rounding that grows over the epochs.
FLOAT64_RTOL = {"numpy": 1e-12, "numba": 1e-10}
HYPERPARAMETERS = [(0.01, 0.0), (0.05, 0.9), (0.002, 0.5)]  # (eps, momentum) of the runs in a group


def make_specs(batch_size, num_hiddens=(8, 6), hyperparameters=HYPERPARAMETERS, **overrides):
    return [
        trainer.RunSpec(eps=eps, momentum=momentum, batch_size=batch_size, num_epochs=3,
                        num_hiddens=num_hiddens, seed=0, **overrides)
        for eps, momentum in hyperparameters
    ]


def assert_results_close(alone, group, rtol):
    assert group.status == alone.status
    assert group.diverged_epoch == alone.diverged_epoch
    for name in model.PARAM_NAMES:
        np.testing.assert_allclose(group.params[name], alone.params[name], rtol=rtol, atol=rtol * 1e-2)
    for column in metrics.HISTORY_COLUMNS:
        np.testing.assert_allclose(group.history[column], alone.history[column], rtol=rtol)
    for name in metrics.FINAL_METRICS:
        assert group.final[name] == pytest.approx(alone.final[name], rel=rtol)
    assert group.best["best_epoch"] == alone.best["best_epoch"]


# The numba kernels train runs one at a time up to PER_RUN_MAX_BATCH and through BLAS above it.
LARGEST_PER_RUN_BATCH = stacked.PER_RUN_MAX_BATCH


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("batch_size", [1, 10, LARGEST_PER_RUN_BATCH, LARGEST_PER_RUN_BATCH + 1, 100, -1])
def test_group_equals_runs_alone_in_float64(batch_size, kernel):
    data = make_tiny_dataset(num_train=130, num_valid=30, num_test=20)  # batch 100 leaves a batch of 30
    specs = make_specs(batch_size)
    results = stacked.train_group(specs, data, kernel=kernel)
    for spec, result in zip(specs, results):
        assert_results_close(trainer.train(spec, data), result, rtol=FLOAT64_RTOL[kernel])


@pytest.mark.parametrize("kernel", KERNELS)
def test_diverged_run_is_frozen_while_others_continue(kernel):
    data = make_tiny_dataset()
    specs = make_specs(1, num_hiddens=(32, 32), hyperparameters=[(0.01, 0.9), (1.0, 0.9), (0.05, 0.5)])
    finished = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = stacked.train_group(specs, data, kernel=kernel, on_run_end=lambda i, r: finished.append((i, r.status)))

    assert finished == [(1, metrics.STATUS_DIVERGED), (0, metrics.STATUS_OK), (2, metrics.STATUS_OK)]
    assert results[1].diverged_epoch == 1
    assert len(results[0].history["epoch"]) == 3
    for spec, result in zip(specs, results):
        assert_results_close(trainer.train(spec, data), result, rtol=FLOAT64_RTOL[kernel])


@pytest.mark.parametrize("batch_size", [1, 10, 100])
def test_float32_group_close_to_runs_alone(batch_size):
    data = make_tiny_dataset()
    specs = make_specs(batch_size, dtype="float32")
    results = stacked.train_group(specs, data)
    for spec, result in zip(specs, results):
        assert result.params["W1"].dtype == np.float32
        assert_results_close(trainer.train(spec, data), result, rtol=1e-4)


def compiled_kernels():
    if "numba" not in KERNELS:
        pytest.skip("numba is not installed")
    return stacked.select_kernels("numba")


def test_numba_update_rounds_as_numpy_update():
    compiled = compiled_kernels()
    rng = np.random.default_rng(0)
    W1T, V1 = rng.standard_normal((12, 20)), rng.standard_normal((12, 20))
    dh1, xb = rng.standard_normal((3, 12)), rng.uniform(size=(3, 20))
    eps_rows, momentum_rows = np.repeat([0.1, 0.01, 1.0], 4), np.repeat([0.9, 0.0, 0.5], 4)
    expected_w, expected_v = W1T.copy(), V1.copy()
    stacked.update_layer1_numpy(expected_w, expected_v, np.empty_like(W1T), dh1, xb, eps_rows, momentum_rows)

    compiled.update_layer1(W1T, V1, dh1.T @ xb, eps_rows, momentum_rows, np.finfo(float).tiny, 0.0)
    np.testing.assert_array_equal(W1T, expected_w)
    with_velocity = momentum_rows != 0  # runs with momentum 0 keep no velocity
    np.testing.assert_array_equal(V1[with_velocity], expected_v[with_velocity])


@pytest.mark.parametrize("momentum", [0.9, 0.0])
@pytest.mark.parametrize("num_samples", [1, 3])
def test_per_run_layer1_step_matches_numpy_update(num_samples, momentum):
    compiled = compiled_kernels()
    rng = np.random.default_rng(1)
    W1, V1 = rng.standard_normal((6, 20)), rng.standard_normal((6, 20))
    x = rng.uniform(size=(10, 20))
    batch, next_batch = np.arange(num_samples), np.arange(5, 5 + num_samples)
    dh1 = rng.standard_normal((num_samples, 6))
    dh1[:, 2] = 0  # an inactive ReLU unit
    eps_rows, momentum_rows = np.full(6, 0.1), np.full(6, momentum)
    expected_w, expected_v = W1.copy(), V1.copy()
    stacked.update_layer1_numpy(expected_w, expected_v, np.empty_like(W1), dh1, x[batch], eps_rows, momentum_rows)

    a1_next = np.empty((num_samples, 6))
    compiled.layer1_step(W1, V1, dh1, x, batch, next_batch, 0.1, momentum, 8, np.empty(8), a1_next,
                         np.finfo(float).tiny, 0.0)
    if num_samples == 1:  # one product per entry: rounds exactly as numpy
        np.testing.assert_array_equal(W1, expected_w)
    else:  # the batch sum adds in another order than BLAS
        np.testing.assert_allclose(W1, expected_w, rtol=1e-14)
    if momentum != 0:
        np.testing.assert_allclose(V1, expected_v, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(a1_next, x[next_batch] @ W1.T, rtol=1e-12)


@pytest.mark.parametrize("momentum", [0.1, 0.0])
def test_numba_update_flushes_subnormal_velocities(momentum):
    compiled = compiled_kernels()
    tiny = np.finfo(np.float32).tiny
    W1T = np.zeros((4, 8), np.float32)
    V1 = np.full((4, 8), 4 * tiny, np.float32)
    grad = np.full((4, 8), 0 if momentum else 4 * tiny, np.float32)
    rows = np.full(4, 0.1, np.float32)
    compiled.update_layer1(W1T, V1, grad, rows, np.full(4, momentum, np.float32), tiny, np.float32(0))

    # v = 0.1 * 4 tiny (from the old velocity or from the gradient) is subnormal, so it is
    # flushed to zero and w stays zero.
    np.testing.assert_array_equal(W1T, 0)
    if momentum != 0:
        np.testing.assert_array_equal(V1, 0)


def test_per_run_layer1_step_flushes_subnormal_velocities():
    compiled = compiled_kernels()
    tiny = np.float32(np.finfo(np.float32).tiny)
    W1 = np.zeros((4, 8), np.float32)
    V1 = np.full((4, 8), 4 * tiny, np.float32)
    x = np.ones((2, 8), np.float32)
    dh1 = np.full((1, 4), 4 * tiny, np.float32)
    a1_next = np.empty((1, 4), np.float32)
    compiled.layer1_step(W1, V1, dh1, x, np.array([0]), np.array([1]), np.float32(0.05), np.float32(0.1), 8,
                         np.empty(8, np.float32), a1_next, tiny, np.float32(0))

    # v = 0.1 * 4 tiny - 0.05 * 4 tiny = 0.2 tiny is subnormal, so it is flushed to zero.
    np.testing.assert_array_equal(V1, 0)
    np.testing.assert_array_equal(W1, 0)
    np.testing.assert_array_equal(a1_next, 0)


def test_auto_kernel_falls_back_to_numpy_without_numba(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)  # makes `import numba` raise ImportError
    monkeypatch.delitem(sys.modules, "tfd_sweep.kernels", raising=False)
    assert stacked.select_kernels("auto") is None
    with pytest.raises(ImportError):
        stacked.select_kernels("numba")


def test_rejects_unknown_kernel():
    with pytest.raises(ValueError, match=r"kernel == 'cuda', must be one of \('auto', 'numpy', 'numba'\)"):
        stacked.select_kernels("cuda")


def test_rejects_runs_of_different_groups():
    specs = make_specs(10) + make_specs(5)[:1]
    with pytest.raises(ValueError, match="train_group\\(\\) needs runs with one group_key\\(\\)"):
        stacked.train_group(specs, make_tiny_dataset())


def test_failed_grad_check_fails_only_runs_that_ask(monkeypatch):
    monkeypatch.setattr(gradcheck, "GRAD_CHECK_TOLERANCE", 0.0)
    specs = make_specs(10, hyperparameters=[(0.01, 0.0), (0.05, 0.9)])
    specs[0] = dataclasses.replace(specs[0], check_grad=True)
    results = stacked.train_group(specs, make_tiny_dataset())
    assert results[0].status == metrics.STATUS_FAILED
    assert results[0].error.startswith("Gradient check failed")
    assert results[1].status == metrics.STATUS_OK
    assert results[1].grad_check is None


def test_group_of_failed_grad_checks_returns_failed(monkeypatch):
    monkeypatch.setattr(gradcheck, "GRAD_CHECK_TOLERANCE", 0.0)
    specs = make_specs(10, check_grad=True)
    finished = []
    results = stacked.train_group(specs, make_tiny_dataset(), on_run_end=lambda i, r: finished.append(i))
    assert [result.status for result in results] == [metrics.STATUS_FAILED] * 3
    assert finished == [0, 1, 2]


def test_grad_check_recorded_for_runs_that_ask():
    specs = make_specs(10, hyperparameters=[(0.01, 0.0), (0.05, 0.9)])
    specs[1] = dataclasses.replace(specs[1], check_grad=True)
    results = stacked.train_group(specs, make_tiny_dataset())
    assert results[0].grad_check is None
    assert set(results[1].grad_check) == set(model.PARAM_NAMES)


def numpy_softmax_cross_entropy(logits, labels):
    """Return dlogits, summed cross-entropy and correct count per run, as the numpy step computes them."""
    n = logits.shape[1]
    rows = np.arange(n)
    correct = np.count_nonzero(logits.argmax(axis=2) == labels, axis=1)
    shifted = logits - logits.max(axis=2, keepdims=True)
    probs = np.exp(shifted)
    row_sum = probs.sum(axis=2)
    ce_sum = (np.log(row_sum) - shifted[:, rows, labels]).sum(axis=1)
    probs /= row_sum[:, :, None]
    probs[:, rows, labels] -= 1
    probs /= n
    return probs, ce_sum, correct


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numba_softmax_rounds_as_numpy(dtype):
    compiled = compiled_kernels()
    rng = np.random.default_rng(2)
    logits = (3 * rng.standard_normal((4, 9, 7))).astype(dtype)
    logits[1, 2, 3] = np.nan  # a diverged run's row
    logits[2, 4, :2] = logits[2, 4].max() + 1  # a tie for the maximum
    labels = rng.integers(0, 7, 9)
    expected_probs, expected_ce, expected_correct = numpy_softmax_cross_entropy(logits, labels)

    probs, row_max = np.empty_like(logits), np.empty((4, 9), dtype)
    ce_sum, correct = np.empty(4, dtype), np.empty(4, np.int64)
    with np.errstate(invalid="ignore"):
        compiled.softmax_cross_entropy(logits, labels, probs, row_max, ce_sum, correct)
    np.testing.assert_array_equal(probs, expected_probs)  # NaN rows compare equal
    np.testing.assert_allclose(ce_sum, expected_ce, rtol=10 * np.finfo(dtype).eps)  # the batch sum adds in another order
    np.testing.assert_array_equal(correct, expected_correct)


def test_numba_relu_backward_rounds_as_numpy():
    compiled = compiled_kernels()
    rng = np.random.default_rng(3)
    grad, h = rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 5, 4))
    grad[0, 1, 2], h[0, 1, 2] = np.nan, -1.0  # NaN stays NaN under the mask, as numpy's
    expected_grad = grad * (h > 0)
    expected_bias_grad = expected_grad.sum(axis=1)

    bias_grad = np.empty((3, 4))
    compiled.relu_backward(grad, h, bias_grad, 0.0)
    np.testing.assert_array_equal(grad, expected_grad)
    np.testing.assert_array_equal(bias_grad, expected_bias_grad)

    summed = np.empty((3, 4))
    compiled.sum_over_batch(expected_grad, summed)
    np.testing.assert_array_equal(summed, expected_bias_grad)


@pytest.mark.parametrize("apply_relu", [True, False])
def test_numba_add_bias_rounds_as_numpy(apply_relu):
    compiled = compiled_kernels()
    rng = np.random.default_rng(4)
    a, bias = rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 4))
    a[1, 2, 3] = np.nan  # np.maximum keeps NaN
    expected = a + bias[:, None, :]
    if apply_relu:
        expected = np.maximum(expected, 0)

    compiled.add_bias(a, bias, apply_relu, 0.0)
    np.testing.assert_array_equal(a, expected)


@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_numba_update_skipping_inactive_units_rounds_alike(momentum):
    compiled = compiled_kernels()
    rng = np.random.default_rng(5)
    W1T, V1 = rng.standard_normal((6, 20)), rng.standard_normal((6, 20))
    V1[4] = 0  # an inactive unit whose velocity has decayed to zero
    dh1, xb = rng.standard_normal((3, 6)), rng.uniform(size=(3, 20))
    dh1[:, [1, 4]] = 0  # inactive units: their rows of the gradient are zero
    grad = dh1.T @ xb
    eps_rows, momentum_rows = np.full(6, 0.1), np.full(6, momentum)
    expected_w, expected_v = W1T.copy(), V1.copy()
    compiled.update_layer1(expected_w, expected_v, grad, eps_rows, momentum_rows, np.finfo(float).tiny, 0.0)

    active = dh1.any(axis=0)
    active_grad = grad[active]  # only the rows of active units are passed
    compiled.update_layer1_active(W1T, V1, active_grad, active, eps_rows, momentum_rows, np.finfo(float).tiny, 0.0)
    np.testing.assert_array_equal(W1T, expected_w)
    np.testing.assert_array_equal(V1, expected_v)
