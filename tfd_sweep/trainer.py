"""Train one run of the MLP with momentum SGD and record its learning curves.

`train(spec, data)` is a pure function of the spec and the data: it seeds its own generator
(`np.random.default_rng(spec.seed)`), draws the initial weights W1, W2, W3 from it in that order,
and then draws one permutation of the training set per epoch. The mini-batch loop works in place
on preallocated buffers and stores W1 transposed, (H1, D), the layout that `tfd_sweep.stacked`
also uses, so that both make the same matrix-product calls. Subnormal layer-1 velocities are
flushed to zero (see `optim.flush_subnormals`), which costs no accuracy and avoids slow
arithmetic.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from tfd_sweep import gradcheck, metrics, model, optim
from tfd_sweep.errors import ConfigError

logger = logging.getLogger(__name__)

DTYPES = ("float64", "float32")


@dataclass(frozen=True)
class RunSpec:
    """The hyperparameters of one run, named as on the command line."""

    eps: float  # learning rate, > 0
    momentum: float  # in [0, 1); 0 is plain SGD
    batch_size: int  # samples per mini-batch; -1 = the full training set in one batch
    num_epochs: int  # passes over the training set, >= 1
    num_hiddens: tuple[int, int]  # (H1, H2), hidden units of the two hidden layers
    seed: int  # seeds the initial weights and the per-epoch shuffles
    dtype: str = "float64"  # "float64" or "float32"
    check_grad: bool = False  # compare analytic and numerical gradients before training
    max_ce: float = 1e3  # an epoch's mean train cross-entropy above this counts as divergence

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_hiddens", tuple(int(h) for h in self.num_hiddens))
        problems = []
        if self.dtype not in DTYPES:
            problems.append(f"dtype == {self.dtype!r}, must be one of {DTYPES}")
        if self.batch_size == 0 or self.batch_size < -1:
            problems.append(f"batch_size == {self.batch_size}, must be >= 1 or -1 for the full set")
        if self.num_epochs < 1:
            problems.append(f"num_epochs == {self.num_epochs}, must be >= 1")
        if len(self.num_hiddens) != 2 or min(self.num_hiddens) < 1:
            problems.append(f"num_hiddens == {list(self.num_hiddens)}, must be two sizes >= 1, e.g. [16, 32]")
        if problems:
            raise ConfigError("Invalid run specification: " + "; ".join(problems) + ".")

    def group_key(self) -> tuple:
        """Return what runs must share to be trained together: the data order and the shapes."""
        return (self.batch_size, self.num_hiddens, self.num_epochs, self.seed, self.dtype)


@dataclass
class RunResult:
    """The outcome of one run; metric names come from `tfd_sweep.metrics`."""

    status: str  # metrics.STATUS_OK, STATUS_DIVERGED or STATUS_FAILED
    history: dict[str, np.ndarray]  # metrics.HISTORY_COLUMNS, one entry per finished epoch
    final: dict[str, float]  # metrics.FINAL_METRICS from full passes after training
    best: dict[str, float]  # metrics.BEST_METRICS at the epoch of lowest valid_ce
    params: dict[str, np.ndarray]  # W1 (D, H1), b1 (H1,), W2 (H1, H2), b2, W3 (H2, C), b3
    wall_time: float  # seconds
    diverged_epoch: int | None = None
    grad_check: dict[str, float] | None = field(default=None)  # max relative error per parameter
    error: str | None = None


def train(spec: RunSpec, data, on_epoch=None) -> RunResult:
    """Train one run on `data` (a `tfd_sweep.data.Dataset`) and return its result.

    `on_epoch(epoch, row)` is called after every epoch with the history row as a dict.
    A failed gradient check returns status failed with the error, before any training.
    """
    start_time = time.perf_counter()
    data = as_dtype(data, spec.dtype)
    rng = np.random.default_rng(spec.seed)
    params = model.init_params(spec.num_hiddens, rng, spec.dtype)

    grad_check = None
    if spec.check_grad:
        grad_check = gradcheck.check_gradients(params, spec.seed)
        error = grad_check_error(grad_check)
        if error is not None:
            return failed_result(error, params, grad_check, start_time)

    num_train = data.x_train.shape[0]
    batch_size = effective_batch_size(spec.batch_size, num_train)
    loop = _SingleRunLoop(params, batch_size, spec.eps, spec.momentum)
    rows = []
    diverged_epoch = None
    with np.errstate(all="ignore"):
        for epoch in range(1, spec.num_epochs + 1):
            perm = rng.permutation(num_train)
            train_ce, train_acc = loop.run_epoch(data.x_train, data.y_train, perm)
            valid_ce, valid_acc = model.evaluate(loop.params_view(), data.x_valid, data.y_valid)
            row = history_row(epoch, train_ce, train_acc, valid_ce, valid_acc)
            rows.append(row)
            if on_epoch is not None:
                on_epoch(epoch, row)
            if is_diverged(train_ce, spec.max_ce):
                diverged_epoch = epoch
                logger.info("Run diverged at epoch %d: train_ce = %g (max_ce = %g)", epoch, train_ce, spec.max_ce)
                break

        final_params = loop.params_copy()
        final = final_metrics(final_params, data)

    return RunResult(
        status=metrics.STATUS_OK if diverged_epoch is None else metrics.STATUS_DIVERGED,
        history=history_arrays(rows),
        final=final,
        best=best_metrics(rows),
        params=final_params,
        wall_time=time.perf_counter() - start_time,
        diverged_epoch=diverged_epoch,
        grad_check=grad_check,
    )


class _SingleRunLoop:
    """Parameters, velocities and preallocated buffers of one run, and its epoch loop.

    Buffers hold B rows; the last mini-batch of an epoch may use fewer of them.
    """

    def __init__(self, params: dict[str, np.ndarray], batch_size: int, eps: float, momentum: float):
        dtype = params["W1"].dtype
        num_hidden1, num_hidden2 = params["W2"].shape
        num_classes = params["W3"].shape[1]
        self.eps = eps
        self.momentum = momentum

        # W1 is stored transposed, (H1, D), as in the stacked trainer.
        self.W1T = np.ascontiguousarray(params["W1"].T)
        self.b1, self.W2, self.b2 = params["b1"].copy(), params["W2"].copy(), params["b2"].copy()
        self.W3, self.b3 = params["W3"].copy(), params["b3"].copy()
        self.weights = (self.W1T, self.b1, self.W2, self.b2, self.W3, self.b3)
        self.velocities = tuple(np.zeros_like(w) for w in self.weights)
        self.grads = tuple(np.zeros_like(w) for w in self.weights)
        self.subnormal_mask = np.zeros(self.W1T.shape, bool)

        B = batch_size
        self.h1 = np.empty((B, num_hidden1), dtype)
        self.h2 = np.empty((B, num_hidden2), dtype)
        self.logits = np.empty((B, num_classes), dtype)
        self.probs = np.empty((B, num_classes), dtype)
        self.row_max = np.empty(B, dtype)
        self.row_sum = np.empty(B, dtype)
        self.dh1 = np.empty((B, num_hidden1), dtype)
        self.dh2 = np.empty((B, num_hidden2), dtype)
        self.mask1 = np.empty((B, num_hidden1), bool)
        self.mask2 = np.empty((B, num_hidden2), bool)
        self.rows = np.arange(B)
        self.batch_size = B

    def run_epoch(self, x: np.ndarray, y: np.ndarray, perm: np.ndarray) -> tuple[float, float]:
        """Walk (x, y) in mini-batches in the order `perm`, updating the weights after each.

        Returns the epoch's train cross-entropy and accuracy, averaged over the mini-batches
        weighted by their sizes, each measured before that mini-batch's update.
        """
        num_samples = len(perm)
        total_ce = 0.0
        total_correct = 0
        for start in range(0, num_samples, self.batch_size):
            batch = perm[start : start + self.batch_size]
            ce_sum, correct = self.step(x[batch], y[batch])
            total_ce += ce_sum
            total_correct += correct
        return total_ce / num_samples, total_correct / num_samples

    def step(self, xb: np.ndarray, yb: np.ndarray) -> tuple[float, int]:
        """Take one momentum step on the mini-batch xb (N, D), yb (N,).

        Returns the batch's summed cross-entropy and number of correct predictions.
        """
        n = xb.shape[0]
        W1T, b1, W2, b2, W3, b3 = self.weights
        dW1T, db1, dW2, db2, dW3, db3 = self.grads
        h1, h2, logits, probs = self.h1[:n], self.h2[:n], self.logits[:n], self.probs[:n]
        dh1, dh2, mask1, mask2 = self.dh1[:n], self.dh2[:n], self.mask1[:n], self.mask2[:n]
        row_max, row_sum, rows = self.row_max[:n], self.row_sum[:n], self.rows[:n]

        # Forward: h1 = relu(x W1 + b1), h2 = relu(h1 W2 + b2), logits = h2 W3 + b3.
        np.matmul(xb, W1T.T, out=h1)
        h1 += b1
        np.maximum(h1, 0, out=h1)
        np.matmul(h1, W2, out=h2)
        h2 += b2
        np.maximum(h2, 0, out=h2)
        np.matmul(h2, W3, out=logits)
        logits += b3
        correct = int(np.count_nonzero(logits.argmax(axis=1) == yb))

        # Cross-entropy via log-softmax with the row maximum subtracted; dlogits = (p - t) / N.
        np.max(logits, axis=1, out=row_max)
        logits -= row_max[:, None]
        np.exp(logits, out=probs)
        np.sum(probs, axis=1, out=row_sum)
        ce_sum = float((np.log(row_sum) - logits[rows, yb]).sum())
        probs /= row_sum[:, None]
        probs[rows, yb] -= 1
        probs /= n
        dlogits = probs

        # Backward; layer 1's input gradient is not needed.
        np.matmul(h2.T, dlogits, out=dW3)
        np.sum(dlogits, axis=0, out=db3)
        np.matmul(dlogits, W3.T, out=dh2)
        np.greater(h2, 0, out=mask2)
        dh2 *= mask2
        np.matmul(h1.T, dh2, out=dW2)
        np.sum(dh2, axis=0, out=db2)
        np.matmul(dh2, W2.T, out=dh1)
        np.greater(h1, 0, out=mask1)
        dh1 *= mask1
        if n == 1:
            # An outer product rounds each entry once, as the k=1 matrix product does. einsum
            # computed it about 2x faster than a broadcast multiply (measured with numpy 2.4).
            np.einsum("i,j->ij", dh1[0], xb[0], out=dW1T)
        else:
            np.matmul(dh1.T, xb, out=dW1T)
        np.sum(dh1, axis=0, out=db1)

        # Momentum update v = momentum * v - eps * grad; w = w + v (grads are scratch now).
        # Layer 1's velocities, the bulk of the parameters, are flushed of subnormal numbers.
        for index, (w, v, grad) in enumerate(zip(self.weights, self.velocities, self.grads)):
            grad *= self.eps
            v *= self.momentum
            v -= grad
            if index == 0:
                optim.flush_subnormals(v, grad, self.subnormal_mask)
            w += v
        return ce_sum, correct

    def params_view(self) -> dict[str, np.ndarray]:
        """Return the current parameters as views (W1 as a transposed view), for evaluation."""
        return {"W1": self.W1T.T, "b1": self.b1, "W2": self.W2, "b2": self.b2, "W3": self.W3, "b3": self.b3}

    def params_copy(self) -> dict[str, np.ndarray]:
        """Return C-contiguous copies of the current parameters, W1 as (D, H1)."""
        return {name: np.ascontiguousarray(value).copy() for name, value in self.params_view().items()}


def as_dtype(data, dtype: str):
    """Return `data` with inputs in `dtype`, converting only when needed."""
    if data.x_train.dtype == np.dtype(dtype):
        return data
    return data.astype(dtype)


def effective_batch_size(batch_size: int, num_samples: int) -> int:
    """Return the mini-batch size in samples: -1 and sizes above N mean the whole set."""
    if batch_size == -1 or batch_size > num_samples:
        return num_samples
    return batch_size


def is_diverged(train_ce: float, max_ce: float) -> bool:
    """Return whether an epoch's mean train cross-entropy marks the run as diverged."""
    return not math.isfinite(train_ce) or train_ce > max_ce


def grad_check_error(grad_check: dict[str, float]) -> str | None:
    """Return the error message of a failed gradient check, or None when it passed."""
    name = max(grad_check, key=lambda key: grad_check[key])
    worst = grad_check[name]
    if worst <= gradcheck.GRAD_CHECK_TOLERANCE:
        return None
    return (
        f"Gradient check failed: the analytic gradient of {name} differs from centred finite "
        f"differences by a relative error of {worst:.3g}, above the tolerance "
        f"{gradcheck.GRAD_CHECK_TOLERANCE:g}. This is a bug in tfd_sweep's backward pass; "
        "report it with the run's config. check_grad=false skips the check."
    )


def failed_result(error: str, params: dict[str, np.ndarray], grad_check, start_time: float) -> RunResult:
    """Return the result of a run that failed before training."""
    logger.error("%s", error)
    return RunResult(
        status=metrics.STATUS_FAILED,
        history=history_arrays([]),
        final={name: math.nan for name in metrics.FINAL_METRICS},
        best=best_metrics([]),
        params=params,
        wall_time=time.perf_counter() - start_time,
        grad_check=grad_check,
        error=error,
    )


def history_row(epoch: int, train_ce: float, train_acc: float, valid_ce: float, valid_acc: float) -> dict:
    """Return one history row, keyed by metrics.HISTORY_COLUMNS."""
    values = (epoch, float(train_ce), float(train_acc), float(valid_ce), float(valid_acc))
    return dict(zip(metrics.HISTORY_COLUMNS, values))


def history_arrays(rows: list[dict]) -> dict[str, np.ndarray]:
    """Return the history rows as one array per column (epoch as int64, the rest float64)."""
    history = {}
    for column in metrics.HISTORY_COLUMNS:
        dtype = np.int64 if column == "epoch" else np.float64
        history[column] = np.array([row[column] for row in rows], dtype=dtype)
    return history


def best_metrics(rows: list[dict]) -> dict:
    """Return the epoch of lowest finite valid_ce and its values (None and nan if there is none)."""
    finite = [row for row in rows if math.isfinite(row["valid_ce"])]
    if not finite:
        best = {name: math.nan for name in metrics.BEST_METRICS}
        best["best_epoch"] = None
        return best
    row = min(finite, key=lambda r: r["valid_ce"])  # the first of equal minima
    return {
        "best_epoch": int(row["epoch"]),
        "best_valid_ce": row["valid_ce"],
        "best_valid_acc": row["valid_acc"],
        "best_train_ce": row["train_ce"],
        "best_train_acc": row["train_acc"],
    }


def final_metrics(params: dict[str, np.ndarray], data) -> dict[str, float]:
    """Return cross-entropy and accuracy of full passes over every split."""
    final = {}
    for split in metrics.SPLITS:
        ce, acc = model.evaluate(params, getattr(data, f"x_{split}"), getattr(data, f"y_{split}"))
        final[f"{split}_ce"] = float(ce)
        final[f"{split}_acc"] = float(acc)
    return final
