"""Compare the MLP's analytic gradients with centred finite differences before training.

The check runs in float64 on a small random batch, using the run's initial parameters but its
own random generator, so switching it on never changes a run's training numbers.
"""

from __future__ import annotations

import numpy as np

from tfd_sweep import layers, model

GRAD_CHECK_TOLERANCE = 1e-5  # largest accepted relative error; a correct backward gives 1e-7 or less
STEP = 1e-4  # finite-difference step h in (f(w + h) - f(w - h)) / 2h; smaller steps drown in rounding
NUM_SAMPLES = 4  # rows of the random batch
MAX_FULL_SIZE = 256  # arrays up to this many entries are checked at every entry
NUM_SAMPLED_ENTRIES = 64  # entries checked in each larger array
# Entries whose gradient is far below the array's largest one are compared with this fraction
# of that largest gradient, because their finite difference is mostly rounding noise.
FLOOR_FRACTION = 1e-2


def relative_error(analytic: np.ndarray, numerical: np.ndarray, floor: float = 1e-12) -> np.ndarray:
    """Return |a - n| / max(|a| + |n|, floor) elementwise."""
    denominator = np.maximum(np.abs(analytic) + np.abs(numerical), floor)
    return np.abs(analytic - numerical) / denominator


def check_gradients(params: dict[str, np.ndarray], seed: int) -> dict[str, float]:
    """Return the maximum relative error of each parameter's analytic gradient.

    `params` (any float dtype) are copied to float64 and left unchanged. The batch and the
    sampled entries come from `np.random.default_rng([seed, 1])`. An entry whose two
    perturbed passes see different ReLU on/off patterns sits on a kink, where the finite
    difference is not a derivative, and is skipped.
    """
    rng = np.random.default_rng([seed, 1])
    params64 = {name: np.array(value, dtype=np.float64) for name, value in params.items()}
    x = rng.uniform(0.0, 1.0, size=(NUM_SAMPLES, params64["W1"].shape[0]))
    y = rng.integers(0, params64["W3"].shape[1], size=NUM_SAMPLES)

    _, analytic_grads = model.loss_and_grads(params64, x, y)

    errors = {}
    for name in model.PARAM_NAMES:
        w = params64[name]
        flat = w.reshape(-1)  # a view: perturbing it perturbs w
        if flat.size <= MAX_FULL_SIZE:
            entries = np.arange(flat.size)
        else:
            entries = rng.choice(flat.size, size=NUM_SAMPLED_ENTRIES, replace=False)

        analytic_flat = analytic_grads[name].reshape(-1)
        floor = max(FLOOR_FRACTION * float(np.abs(analytic_flat).max()), 1e-12)
        worst = 0.0
        for entry in entries:
            original = flat[entry]
            flat[entry] = original + STEP
            loss_plus, pattern_plus = _loss_and_relu_pattern(params64, x, y)
            flat[entry] = original - STEP
            loss_minus, pattern_minus = _loss_and_relu_pattern(params64, x, y)
            flat[entry] = original
            if not np.array_equal(pattern_plus, pattern_minus):
                continue
            numerical = (loss_plus - loss_minus) / (2 * STEP)
            error = relative_error(np.float64(analytic_flat[entry]), np.float64(numerical), floor)
            worst = max(worst, float(error))
        errors[name] = worst
    return errors


def _loss_and_relu_pattern(
    params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray
) -> tuple[float, np.ndarray]:
    logits, cache = model.forward(params, x)
    loss, _ = layers.softmax_cross_entropy(logits, y)
    pattern = np.concatenate([(cache["a1"] > 0).ravel(), (cache["a2"] > 0).ravel()])
    return loss, pattern
