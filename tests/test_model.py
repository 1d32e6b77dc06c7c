"""Model initialization, whole-network gradients, evaluation and the gradient check."""

import time

import numpy as np
import pytest

from tfd_sweep import gradcheck, model

TOLERANCE = 1e-6  # largest accepted relative error between analytic and numerical gradients


def test_init_params_shapes_scales_and_draw_order():
    params = model.init_params((5, 4), np.random.default_rng(7))

    rng = np.random.default_rng(7)
    expected_w1 = 0.1 * rng.standard_normal((2304, 5))
    expected_w2 = 0.1 * rng.standard_normal((5, 4))
    expected_w3 = 0.01 * rng.standard_normal((4, 7))
    np.testing.assert_array_equal(params["W1"], expected_w1)
    np.testing.assert_array_equal(params["W2"], expected_w2)
    np.testing.assert_array_equal(params["W3"], expected_w3)
    for name, size in (("b1", 5), ("b2", 4), ("b3", 7)):
        np.testing.assert_array_equal(params[name], np.zeros(size))
    assert all(value.dtype == np.float64 for value in params.values())


def test_init_params_float32_rounds_float64_draws():
    params64 = model.init_params((3, 2), np.random.default_rng(1))
    params32 = model.init_params((3, 2), np.random.default_rng(1), "float32")
    for name in model.PARAM_NAMES:
        assert params32[name].dtype == np.float32
        np.testing.assert_array_equal(params32[name], params64[name].astype(np.float32))


def test_backward_matches_numerical_for_every_parameter():
    rng = np.random.default_rng(0)
    params = model.init_params((6, 5), rng)
    for name in ("b1", "b2", "b3"):
        params[name] = 0.1 * rng.standard_normal(params[name].shape)
    x = rng.uniform(0.0, 1.0, size=(3, 2304))
    y = np.array([0, 3, 6])
    _, grads = model.loss_and_grads(params, x, y)

    step = 1e-4  # a relative error of ~1e-8 here; smaller steps drown in rounding
    for name in model.PARAM_NAMES:
        flat = params[name].reshape(-1)
        entries = range(flat.size) if flat.size <= 64 else rng.choice(flat.size, 64, replace=False)
        for entry in entries:
            original = flat[entry]
            flat[entry] = original + step
            plus, _ = model.loss_and_grads(params, x, y)
            flat[entry] = original - step
            minus, _ = model.loss_and_grads(params, x, y)
            flat[entry] = original
            numerical = (plus - minus) / (2 * step)
            analytic = grads[name].reshape(-1)[entry]
            error = abs(analytic - numerical) / max(abs(analytic) + abs(numerical), 1e-9)
            assert error < TOLERANCE, f"{name}[{entry}]: analytic {analytic}, numerical {numerical}"


def test_evaluate_equals_single_pass_across_chunks(monkeypatch):
    rng = np.random.default_rng(3)
    params = model.init_params((6, 5), rng)
    x = rng.uniform(0.0, 1.0, size=(23, 2304))
    y = rng.integers(0, 7, size=23)

    logits, _ = model.forward(params, x)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    expected_ce = -np.mean(np.log(p[np.arange(23), y]))
    expected_acc = np.mean(logits.argmax(axis=1) == y)

    monkeypatch.setattr(model, "EVAL_CHUNK", 5)
    ce, acc = model.evaluate(params, x, y)
    assert ce == pytest.approx(expected_ce, rel=1e-12)
    assert acc == expected_acc


def test_gradcheck_reports_small_error_for_every_parameter():
    params = model.init_params((16, 32), np.random.default_rng(0))
    errors = gradcheck.check_gradients(params, seed=0)
    assert set(errors) == set(model.PARAM_NAMES)
    for name, error in errors.items():
        assert error < gradcheck.GRAD_CHECK_TOLERANCE, name


def test_gradcheck_leaves_params_unchanged():
    params = model.init_params((4, 3), np.random.default_rng(0), "float32")
    before = {name: value.copy() for name, value in params.items()}
    gradcheck.check_gradients(params, seed=0)
    for name in model.PARAM_NAMES:
        np.testing.assert_array_equal(params[name], before[name])


def test_gradcheck_detects_wrong_backward(monkeypatch):
    correct_backward = model.backward

    def backward_with_bad_w2(params, cache, dlogits):
        grads = correct_backward(params, cache, dlogits)
        grads["W2"] = grads["W2"] * 1.01
        return grads

    monkeypatch.setattr(model, "backward", backward_with_bad_w2)
    errors = gradcheck.check_gradients(model.init_params((16, 32), np.random.default_rng(0)), seed=0)
    assert errors["W2"] > gradcheck.GRAD_CHECK_TOLERANCE
    assert errors["W1"] < gradcheck.GRAD_CHECK_TOLERANCE


def test_gradcheck_runs_well_under_a_second():
    params = model.init_params((100, 100), np.random.default_rng(0))
    start = time.perf_counter()
    gradcheck.check_gradients(params, seed=0)
    assert time.perf_counter() - start < 0.5
