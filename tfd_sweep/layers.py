"""Forward and backward passes of the MLP's layers, each forward beside its gradient.

Shapes use fixed letters: N samples, D inputs, H hidden units, C classes. The functions
allocate their results and keep no state; the training loop in `tfd_sweep.trainer` repeats
the same arithmetic in place on preallocated buffers.
"""

from __future__ import annotations

import numpy as np


def affine_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Compute `x @ w + b`.

    x: (N, D) inputs, w: (D, H) weights, b: (H,) biases. Returns (N, H).
    """
    return x @ w + b


def affine_backward(
    dout: np.ndarray, x: np.ndarray, w: np.ndarray, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Compute the gradients of an affine layer from the gradient at its output.

    dout: (N, H) gradient at the output, x: (N, D) the forward input, w: (D, H) weights.
    Returns dx (N, D) (None when `need_dx` is False, as for the first layer), dw (D, H) and
    db (H,).
    """
    dx = dout @ w.T if need_dx else None
    dw = x.T @ dout
    db = dout.sum(axis=0)
    return dx, dw, db


def relu_forward(a: np.ndarray) -> np.ndarray:
    """Compute `max(a, 0)` elementwise. a: (N, H). Returns (N, H)."""
    return np.maximum(a, 0)


def relu_backward(dout: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Pass the gradient where the ReLU's input was positive and zero it elsewhere.

    dout: (N, H) gradient at the ReLU output, a: (N, H) the ReLU input (its output works
    too, because both are positive at the same places). Returns (N, H).
    """
    return dout * (a > 0)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Compute log-probabilities with the row maximum subtracted, so no `exp` overflows.

    logits: (N, C). Returns (N, C), finite wherever the logits are finite.
    """
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Compute the mean cross-entropy of the softmax of `logits` and its gradient.

    logits: (N, C), y: (N,) integer class indices. Returns the loss
    `-sum(log p[n, y[n]]) / N` in nats, and dlogits (N, C) = `(p - t) / N`, where t is
    the one-hot encoding of y.
    """
    num_samples = logits.shape[0]
    rows = np.arange(num_samples)
    log_probs = log_softmax(logits)
    loss = -log_probs[rows, y].sum() / num_samples

    dlogits = np.exp(log_probs)
    dlogits[rows, y] -= 1.0
    dlogits /= num_samples
    return float(loss), dlogits


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Return the fraction of rows whose largest logit is at the label. logits: (N, C), y: (N,)."""
    return float(np.mean(logits.argmax(axis=1) == y))
