"""The course's two-hidden-layer MLP: initialization, forward and backward passes, evaluation.

    h1 = relu(x W1 + b1),  h2 = relu(h1 W2 + b2),  y = h2 W3 + b3,  p = softmax(y)

Shapes: N samples, D = 2304 inputs, H1 and H2 hidden units, C = 7 classes. Parameters live in
a dict with the keys of PARAM_NAMES: W1 (D, H1), b1 (H1,), W2 (H1, H2), b2 (H2,), W3 (H2, C),
b3 (C,).
"""

from __future__ import annotations

import numpy as np

from tfd_sweep import layers

NUM_INPUTS = 2304  # D: 48 x 48 pixels
NUM_CLASSES = 7  # C
PARAM_NAMES = ("W1", "b1", "W2", "b2", "W3", "b3")
INIT_SCALES = (0.1, 0.1, 0.01)  # standard deviations of W1, W2, W3 at initialization
EVAL_CHUNK = 1024  # rows per forward pass in evaluate(), bounds the activations' memory


def init_params(
    num_hiddens: tuple[int, int], rng: np.random.Generator, dtype: str = "float64"
) -> dict[str, np.ndarray]:
    """Draw the initial parameters: W1, W2, W3 scaled standard normals, biases zero.

    The draws are `rng.standard_normal` in float64 in the order W1, W2, W3, then cast to
    `dtype`, so a float32 run starts from the float64 run's weights rounded to float32.
    """
    num_hidden1, num_hidden2 = num_hiddens
    shapes = ((NUM_INPUTS, num_hidden1), (num_hidden1, num_hidden2), (num_hidden2, NUM_CLASSES))
    params = {}
    for index, (shape, scale) in enumerate(zip(shapes, INIT_SCALES), start=1):
        params[f"W{index}"] = (scale * rng.standard_normal(shape)).astype(dtype)
        params[f"b{index}"] = np.zeros(shape[1], dtype=dtype)
    return params


def forward(params: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Compute the logits (N, C) of inputs x (N, D), and the cache that backward() needs."""
    a1 = layers.affine_forward(x, params["W1"], params["b1"])
    h1 = layers.relu_forward(a1)
    a2 = layers.affine_forward(h1, params["W2"], params["b2"])
    h2 = layers.relu_forward(a2)
    logits = layers.affine_forward(h2, params["W3"], params["b3"])
    cache = {"x": x, "a1": a1, "h1": h1, "a2": a2, "h2": h2}
    return logits, cache


def backward(
    params: dict[str, np.ndarray], cache: dict[str, np.ndarray], dlogits: np.ndarray
) -> dict[str, np.ndarray]:
    """Return the gradient of every parameter from the gradient at the logits (N, C).

    The gradient with respect to the inputs x is not computed, because nothing needs it.
    """
    dh2, dW3, db3 = layers.affine_backward(dlogits, cache["h2"], params["W3"])
    da2 = layers.relu_backward(dh2, cache["a2"])
    dh1, dW2, db2 = layers.affine_backward(da2, cache["h1"], params["W2"])
    da1 = layers.relu_backward(dh1, cache["a1"])
    _, dW1, db1 = layers.affine_backward(da1, cache["x"], params["W1"], need_dx=False)
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "W3": dW3, "b3": db3}


def loss_and_grads(
    params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray
) -> tuple[float, dict[str, np.ndarray]]:
    """Return the mean cross-entropy of a batch x (N, D), y (N,) and every parameter's gradient."""
    logits, cache = forward(params, x)
    loss, dlogits = layers.softmax_cross_entropy(logits, y)
    return loss, backward(params, cache, dlogits)


def evaluate(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Return the mean cross-entropy and the accuracy of the whole set x (N, D), y (N,).

    The forward pass runs in chunks of EVAL_CHUNK rows; the result does not depend on it
    beyond rounding.
    """
    num_samples = x.shape[0]
    total_ce = 0.0
    total_correct = 0
    for start in range(0, num_samples, EVAL_CHUNK):
        stop = min(start + EVAL_CHUNK, num_samples)
        logits, _ = forward(params, x[start:stop])
        log_probs = layers.log_softmax(logits)
        total_ce -= float(log_probs[np.arange(stop - start), y[start:stop]].sum())
        total_correct += int(np.count_nonzero(logits.argmax(axis=1) == y[start:stop]))
    return total_ce / num_samples, total_correct / num_samples
