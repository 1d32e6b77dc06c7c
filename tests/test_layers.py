"""Layer forward/backward pairs against centred finite differences, in float64."""

import warnings

import numpy as np
import pytest

from tfd_sweep import layers

TOLERANCE = 1e-6  # largest accepted relative error between analytic and numerical gradients


def numerical_gradient(f, array: np.ndarray, step: float = 1e-5) -> np.ndarray:
    """Return the centred finite-difference gradient of the scalar f() with respect to `array`."""
    grad = np.zeros_like(array)
    flat, flat_grad = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + step
        plus = f()
        flat[i] = original - step
        minus = f()
        flat[i] = original
        flat_grad[i] = (plus - minus) / (2 * step)
    return grad


def max_relative_error(analytic: np.ndarray, numerical: np.ndarray) -> float:
    denominator = np.maximum(np.abs(analytic) + np.abs(numerical), 1e-10)
    return float(np.max(np.abs(analytic - numerical) / denominator))


def test_affine_forward_computes_x_w_plus_b():
    x = np.arange(6.0).reshape(2, 3)
    w = np.ones((3, 2))
    b = np.array([1.0, -1.0])
    np.testing.assert_array_equal(layers.affine_forward(x, w, b), [[4.0, 2.0], [13.0, 11.0]])


def test_affine_backward_matches_numerical():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((5, 4)), rng.standard_normal((4, 3)), rng.standard_normal(3)
    dout = rng.standard_normal((5, 3))

    def f():
        return float(np.sum(layers.affine_forward(x, w, b) * dout))

    dx, dw, db = layers.affine_backward(dout, x, w)
    assert max_relative_error(dx, numerical_gradient(f, x)) < TOLERANCE
    assert max_relative_error(dw, numerical_gradient(f, w)) < TOLERANCE
    assert max_relative_error(db, numerical_gradient(f, b)) < TOLERANCE


def test_affine_backward_skips_input_gradient():
    rng = np.random.default_rng(1)
    x, w, dout = rng.standard_normal((5, 4)), rng.standard_normal((4, 3)), rng.standard_normal((5, 3))
    dx, dw, db = layers.affine_backward(dout, x, w, need_dx=False)
    assert dx is None
    np.testing.assert_allclose(dw, x.T @ dout)
    np.testing.assert_allclose(db, dout.sum(axis=0))


def test_relu_backward_matches_numerical():
    rng = np.random.default_rng(2)
    # Keep inputs away from the kink at 0, where the derivative does not exist.
    a = rng.uniform(0.1, 1.0, size=(6, 5)) * rng.choice([-1.0, 1.0], size=(6, 5))
    dout = rng.standard_normal((6, 5))

    def f():
        return float(np.sum(layers.relu_forward(a) * dout))

    da = layers.relu_backward(dout, a)
    assert max_relative_error(da, numerical_gradient(f, a)) < TOLERANCE


def test_relu_backward_blocks_gradient_where_input_not_positive():
    a = np.array([[-1.0, 0.0, 2.0]])
    np.testing.assert_array_equal(layers.relu_backward(np.ones((1, 3)), a), [[0.0, 0.0, 1.0]])


def test_softmax_cross_entropy_gradient_matches_numerical():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((6, 7))
    y = rng.integers(0, 7, size=6)

    def f():
        return layers.softmax_cross_entropy(logits, y)[0]

    _, dlogits = layers.softmax_cross_entropy(logits, y)
    assert max_relative_error(dlogits, numerical_gradient(f, logits)) < TOLERANCE


def test_softmax_cross_entropy_matches_naive_formula():
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((5, 7))
    y = rng.integers(0, 7, size=5)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    t = np.eye(7)[y]

    loss, dlogits = layers.softmax_cross_entropy(logits, y)
    assert loss == pytest.approx(-np.sum(t * np.log(p)) / 5, rel=1e-12)
    np.testing.assert_allclose(dlogits, (p - t) / 5, rtol=1e-12, atol=1e-15)


def test_softmax_cross_entropy_finite_for_huge_logits():
    logits = np.array([[1e4, -1e4, 0, 0, 0, 0, 0], [-1e4, 1e4, 0, 0, 0, 0, 0]])
    y = np.array([0, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, dlogits = layers.softmax_cross_entropy(logits, y)
    # Row 0 is right with certainty (loss 0); row 1 is wrong by 2e4 nats.
    assert np.isfinite(loss)
    assert loss == pytest.approx(2e4 / 2)
    assert np.all(np.isfinite(dlogits))
    np.testing.assert_allclose(dlogits[1, :2], [-0.5, 0.5])


def test_accuracy_counts_argmax_hits():
    logits = np.array([[0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    assert layers.accuracy(logits, np.array([1, 0, 0])) == pytest.approx(2 / 3)
