"""Train several runs that share their data order and shapes as one stacked computation.

Runs with equal `RunSpec.group_key()` (batch_size, num_hiddens, num_epochs, seed, dtype) start
from the same weights and see the same mini-batches. They differ only in eps, momentum, max_ce
and check_grad. Training them together removes most of the per-step Python and call overhead:

- Layer 1 of all M runs is one matrix product over their concatenated hidden units. Its weights
  are stored transposed and stacked, W1T (M*H1, D), so that run m's block of rows
  [m*H1, (m+1)*H1) is contiguous, and per-run eps and momentum act on whole blocks.
- Layers 2 and 3 are batched products over a leading run axis: W2 (M, H1, H2), W3 (M, H2, C).

This numpy code is the reference. With numba installed, `tfd_sweep.kernels` replaces parts of it.
Up to PER_RUN_MAX_BATCH samples per batch, it trains the runs one after the other through each
epoch, so that one run's layer-1 weights and velocities stay in cache, which the stacked ones do
not. Above it, the matrix products stay in BLAS, but the layer-1 weight gradient skips the rows
of hidden units that no sample of the batch activates, which are zero. numba kernels fuse the
layer-1 momentum update into one pass and replace numpy's many small calls for the softmax, the
ReLU masks and the bias gradients, whose reductions over short axes cost more than their work.

Every run follows the arithmetic of `tfd_sweep.trainer.train`. Only the order of additions can
differ (inside BLAS, and in the numba kernels' products), so float64 results agree with train()
to rounding. A diverged run is recorded and removed from the stack at the end of its epoch, and
the others continue.
"""

from __future__ import annotations

import importlib
import logging
import time
from types import ModuleType

import numpy as np

from tfd_sweep import gradcheck, metrics, model, optim
from tfd_sweep.trainer import (
    RunResult,
    RunSpec,
    as_dtype,
    best_metrics,
    effective_batch_size,
    failed_result,
    final_metrics,
    grad_check_error,
    history_arrays,
    history_row,
    is_diverged,
)

logger = logging.getLogger(__name__)

KERNELS = ("auto", "numpy", "numba")
NUMPY_BLOCK_BYTES = 256 * 1024  # bytes per array in one row block of the numpy layer-1 update
# Up to this batch size the numba kernels train the runs one at a time, each with its layer-1
# weights in cache. Above it, all runs step together through BLAS. On a 2-core Xeon (numba 0.68,
# numpy 2.4, 15 runs of [16, 32]), the per-run kernel was 1.3x faster at batch size 10 and 1.3x
# to 1.7x slower at 20 and 32, so the crossover lies between 10 and 20.
PER_RUN_MAX_BATCH = 16


def train_group(specs: list[RunSpec], data, on_run_end=None, kernel: str = "auto") -> list[RunResult]:
    """Train runs that share one group_key() together and return their results in order.

    `on_run_end(index, result)` is called as soon as run `specs[index]` finishes, diverges or
    fails. `kernel` selects the implementation: "numpy" (the reference), "numba" (the kernels
    of `tfd_sweep.kernels`; raises ImportError without numba) or "auto" (numba when it is
    installed). A run's
    `wall_time` is its share of the group's time: each epoch's time divided among the runs
    still training in it.
    """
    start_time = time.perf_counter()
    _check_same_group(specs)
    compiled = select_kernels(kernel)
    first = specs[0]
    data = as_dtype(data, first.dtype)
    rng = np.random.default_rng(first.seed)
    params = model.init_params(first.num_hiddens, rng, first.dtype)
    results: list[RunResult | None] = [None] * len(specs)

    def finish(index: int, result: RunResult) -> None:
        results[index] = result
        if on_run_end is not None:
            on_run_end(index, result)

    # All runs start from the same weights, so one gradient check serves every run asking for it.
    grad_check = None
    active = list(range(len(specs)))
    if any(spec.check_grad for spec in specs):
        grad_check = gradcheck.check_gradients(params, first.seed)
        error = grad_check_error(grad_check)
        if error is not None:
            for index in [i for i in active if specs[i].check_grad]:
                initial_params = {name: value.copy() for name, value in params.items()}
                finish(index, failed_result(error, initial_params, dict(grad_check), start_time))
            active = [i for i in active if not specs[i].check_grad]
            if not active:
                return results

    num_train = data.x_train.shape[0]
    batch_size = effective_batch_size(first.batch_size, num_train)
    stack = _Stack(params, [specs[i] for i in active], batch_size, compiled)
    rows: dict[int, list[dict]] = {index: [] for index in active}
    time_share = {index: 0.0 for index in active}
    setup_time = time.perf_counter() - start_time
    for index in active:
        time_share[index] = setup_time / max(len(active), 1)

    with np.errstate(all="ignore"):
        for epoch in range(1, first.num_epochs + 1):
            if not active:  # every run diverged
                break
            epoch_start = time.perf_counter()
            perm = rng.permutation(num_train)
            train_ce, train_acc = stack.run_epoch(data.x_train, data.y_train, perm)
            valid_ce, valid_acc = stack.evaluate(data.x_valid, data.y_valid)

            diverged = []
            for slot, index in enumerate(active):
                row = history_row(epoch, train_ce[slot], train_acc[slot], valid_ce[slot], valid_acc[slot])
                rows[index].append(row)
                if is_diverged(row["train_ce"], specs[index].max_ce):
                    diverged.append(slot)
            epoch_time = (time.perf_counter() - epoch_start) / len(active)
            for index in active:
                time_share[index] += epoch_time

            for slot in diverged:
                index = active[slot]
                logger.info(
                    "Run %d of the group diverged at epoch %d: train_ce = %g (max_ce = %g)",
                    index, epoch, rows[index][-1]["train_ce"], specs[index].max_ce,
                )
                finish(index, _run_result(stack, slot, rows[index], data, time_share[index], grad_check, specs[index], epoch))
            if diverged:
                keep = [slot for slot in range(len(active)) if slot not in diverged]
                stack.select(keep)
                active = [active[slot] for slot in keep]

        for slot, index in enumerate(active):
            finish(index, _run_result(stack, slot, rows[index], data, time_share[index], grad_check, specs[index], None))
    return results


def select_kernels(kernel: str = "auto") -> ModuleType | None:
    """Return the module `tfd_sweep.kernels` for `kernel`, or None for the numpy reference.

    "numba" raises ImportError without numba. "auto" picks numba when it imports and numpy
    otherwise.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel == {kernel!r}, must be one of {KERNELS}")
    if kernel == "numpy":
        return None
    try:
        return importlib.import_module("tfd_sweep.kernels")  # imports numba
    except ImportError:
        if kernel == "numba":
            raise
        logger.debug("numba is not installed; stacked training uses the numpy kernel")
        return None


def update_layer1_numpy(W1T, V1, dW1T, dh1, xb, eps_rows, momentum_rows) -> None:
    """Update W1T, V1 (M*H1, D) in place from dh1 (N, M*H1) and xb (N, D), using dW1T as scratch.

    eps_rows and momentum_rows (M*H1,) hold each row's run's hyperparameters. Rounds as
    `tfd_sweep.trainer` does, including the flush of subnormal velocities.
    """
    if xb.shape[0] > 1:
        np.matmul(dh1.T, xb, out=dW1T)

    # Blocks of rows small enough for the L2 cache take all passes while cached.
    block_rows = max(1, NUMPY_BLOCK_BYTES // (W1T.shape[1] * W1T.itemsize))
    for start in range(0, W1T.shape[0], block_rows):
        rows = slice(start, start + block_rows)
        w, v, grad = W1T[rows], V1[rows], dW1T[rows]
        if xb.shape[0] == 1:
            # An outer product rounds each entry once, as the k=1 matrix product does. einsum
            # computed it about 1.4x faster than a broadcast multiply (measured with numpy 2.4).
            np.einsum("i,j->ij", dh1[0, rows], xb[0], out=grad)
        grad *= eps_rows[rows, None]
        v *= momentum_rows[rows, None]
        v -= grad
        optim.flush_subnormals(v, grad)
        w += v


def _run_result(stack, slot, rows, data, time_share, grad_check, spec, diverged_epoch) -> RunResult:
    start = time.perf_counter()
    params = stack.params_copy(slot)
    final = final_metrics(params, data)
    return RunResult(
        status=metrics.STATUS_OK if diverged_epoch is None else metrics.STATUS_DIVERGED,
        history=history_arrays(rows),
        final=final,
        best=best_metrics(rows),
        params=params,
        wall_time=time_share + time.perf_counter() - start,
        diverged_epoch=diverged_epoch,
        grad_check=dict(grad_check) if spec.check_grad and grad_check is not None else None,
    )


def _check_same_group(specs: list[RunSpec]) -> None:
    if not specs:
        raise ValueError("train_group() needs at least one RunSpec, got an empty list")
    keys = {spec.group_key() for spec in specs}
    if len(keys) > 1:
        raise ValueError(
            "train_group() needs runs with one group_key() (batch_size, num_hiddens, num_epochs, "
            f"seed, dtype), got {len(keys)}: {sorted(keys, key=repr)}. Group the runs by group_key() first."
        )


class _Stack:
    """Stacked parameters, velocities and buffers of the M runs still training.

    Shapes: M runs, N samples, D inputs, H1 and H2 hidden units, C classes.
    """

    def __init__(self, params: dict[str, np.ndarray], specs: list[RunSpec], batch_size: int,
                 compiled: ModuleType | None):
        M = len(specs)
        dtype = params["W1"].dtype
        self.dtype = dtype
        self.batch_size = batch_size
        self.compiled = compiled  # tfd_sweep.kernels, or None for numpy
        self.per_run = compiled is not None and batch_size <= PER_RUN_MAX_BATCH
        self.H1, self.H2 = params["W2"].shape
        self.C = params["W3"].shape[1]

        self.W1T = np.ascontiguousarray(np.tile(params["W1"].T, (M, 1)))  # (M*H1, D)
        self.b1 = np.tile(params["b1"], M)  # (M*H1,)
        self.W2 = np.repeat(params["W2"][None], M, axis=0)  # (M, H1, H2)
        self.b2 = np.repeat(params["b2"][None], M, axis=0)  # (M, H2)
        self.W3 = np.repeat(params["W3"][None], M, axis=0)  # (M, H2, C)
        self.b3 = np.repeat(params["b3"][None], M, axis=0)  # (M, C)
        self.V = [np.zeros_like(w) for w in self._weights()]
        self.eps = np.array([spec.eps for spec in specs], dtype=dtype)  # (M,), rounded as train() does
        self.momentum = np.array([spec.momentum for spec in specs], dtype=dtype)
        self._allocate()

    def _weights(self) -> list[np.ndarray]:
        return [self.W1T, self.b1, self.W2, self.b2, self.W3, self.b3]

    def _allocate(self) -> None:
        """Allocate buffers for the current number of runs M."""
        M, B, H1, H2, C, dtype = len(self.eps), self.batch_size, self.H1, self.H2, self.C, self.dtype
        self.grads = [np.empty_like(w) for w in self._weights()]
        self.xb = np.empty((B, self.W1T.shape[1]), dtype)  # the mini-batch's inputs
        self.h1 = np.empty((B, M * H1), dtype)
        self.dh1 = np.empty((B, M * H1), dtype)
        self.mask1 = np.empty((B, M * H1), bool)
        self.h2 = np.empty((M, B, H2), dtype)
        self.dh2 = np.empty((M, B, H2), dtype)
        self.mask2 = np.empty((M, B, H2), bool)
        self.logits = np.empty((M, B, C), dtype)
        self.probs = np.empty((M, B, C), dtype)
        self.row_max = np.empty((M, B), dtype)
        self.row_sum = np.empty((M, B), dtype)
        self.ce_sum = np.empty(M, dtype)
        self.correct = np.empty(M, np.int64)
        self.rows = np.arange(B)

        # Per-run hyperparameters broadcast over each parameter's run axis.
        self.eps_rows = np.repeat(self.eps, H1)  # (M*H1,), one per row of W1T and entry of b1
        self.momentum_rows = np.repeat(self.momentum, H1)
        self.eps_by_param = [self.eps_rows[:, None], self.eps_rows, self.eps[:, None, None],
                             self.eps[:, None], self.eps[:, None, None], self.eps[:, None]]
        self.momentum_by_param = [self.momentum_rows[:, None], self.momentum_rows, self.momentum[:, None, None],
                                  self.momentum[:, None], self.momentum[:, None, None], self.momentum[:, None]]

    def select(self, keep: list[int]) -> None:
        """Keep only the runs at positions `keep`, dropping the others from every array."""
        H1, D = self.H1, self.W1T.shape[1]
        self.W1T = np.ascontiguousarray(self.W1T.reshape(-1, H1, D)[keep].reshape(-1, D))
        self.b1 = np.ascontiguousarray(self.b1.reshape(-1, H1)[keep].reshape(-1))
        self.W2, self.b2, self.W3, self.b3 = (self.W2[keep], self.b2[keep], self.W3[keep], self.b3[keep])
        V1, v1, V2, v2, V3, v3 = self.V
        self.V = [np.ascontiguousarray(V1.reshape(-1, H1, D)[keep].reshape(-1, D)),
                  np.ascontiguousarray(v1.reshape(-1, H1)[keep].reshape(-1)), V2[keep], v2[keep], V3[keep], v3[keep]]
        self.eps, self.momentum = self.eps[keep], self.momentum[keep]
        self._allocate()

    def run_epoch(self, x: np.ndarray, y: np.ndarray, perm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Walk (x, y) in mini-batches in the order `perm`, updating every run after each.

        Returns per-run train cross-entropy and accuracy (M,), weighted by batch size.
        """
        M = len(self.eps)
        num_samples = len(perm)
        total_ce = np.zeros(M)
        total_correct = np.zeros(M, dtype=np.int64)
        if self.per_run:
            self.compiled.train_epoch_per_run(
                x, y, perm, self.batch_size, *self._weights(), *self.V, self.eps, self.momentum,
                np.finfo(self.dtype).tiny, self.dtype.type(0), total_ce, total_correct,
            )
            return total_ce / num_samples, total_correct / num_samples

        for start in range(0, num_samples, self.batch_size):
            batch = perm[start : start + self.batch_size]
            # Gathering into one preallocated buffer avoids a fresh (N, D) array per step, whose
            # first touch cost more than the copy (1.8 MB per float64 batch of 100). perm contains
            # only valid indices, so mode="clip" never clips. It lets np.take write to `out`
            # directly, where the default mode="raise" writes through a temporary copy.
            xb = np.take(x, batch, axis=0, out=self.xb[: len(batch)], mode="clip")
            ce_sum, correct = self.step(xb, y[batch])
            total_ce += ce_sum
            total_correct += correct
        return total_ce / num_samples, total_correct / num_samples

    def step(self, xb: np.ndarray, yb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Take one momentum step of every run on xb (N, D), yb (N,).

        Returns per-run summed cross-entropy and correct predictions, both (M,).
        """
        n = xb.shape[0]
        M, H1 = len(self.eps), self.H1
        W1T, b1, W2, b2, W3, b3 = self._weights()
        dW1T, db1, dW2, db2, dW3, db3 = self.grads
        h1, dh1, mask1 = self.h1[:n], self.dh1[:n], self.mask1[:n]
        h2, dh2, mask2 = self.h2[:, :n], self.dh2[:, :n], self.mask2[:, :n]
        logits, probs = self.logits[:, :n], self.probs[:, :n]
        row_max, row_sum, rows = self.row_max[:, :n], self.row_sum[:, :n], self.rows[:n]
        h1_runs = h1.reshape(n, M, H1).transpose(1, 0, 2)  # (M, N, H1) view of (N, M*H1)
        dh1_runs = dh1.reshape(n, M, H1).transpose(1, 0, 2)

        # Forward: layer 1 for all runs at once, layers 2 and 3 batched over runs.
        np.matmul(xb, W1T.T, out=h1)
        if self.compiled is None:
            h1 += b1
            np.maximum(h1, 0, out=h1)
            np.matmul(h1_runs, W2, out=h2)
            h2 += b2[:, None, :]
            np.maximum(h2, 0, out=h2)
            np.matmul(h2, W3, out=logits)
            logits += b3[:, None, :]
        else:  # h1 (N, M*H1) is passed as one run of M*H1 units
            zero = self.dtype.type(0)
            self.compiled.add_bias(h1[None], b1[None], True, zero)
            np.matmul(h1_runs, W2, out=h2)
            self.compiled.add_bias(h2, b2, True, zero)
            np.matmul(h2, W3, out=logits)
            self.compiled.add_bias(logits, b3, False, zero)

        if self.compiled is None:
            correct = np.count_nonzero(logits.argmax(axis=2) == yb, axis=1)

            # Cross-entropy via log-softmax with the row maximum subtracted; dlogits = (p - t) / N.
            np.max(logits, axis=2, out=row_max)
            logits -= row_max[:, :, None]
            np.exp(logits, out=probs)
            np.sum(probs, axis=2, out=row_sum)
            ce_sum = (np.log(row_sum) - logits[:, rows, yb]).sum(axis=1)
            probs /= row_sum[:, :, None]
            probs[:, rows, yb] -= 1
            probs /= n
        else:
            ce_sum, correct = self.ce_sum, self.correct
            self.compiled.softmax_cross_entropy(logits, yb, probs, row_max, ce_sum, correct)
        dlogits = probs

        # Backward; layer 1's input gradient is not needed. The numba kernels fuse each ReLU
        # mask with its bias gradient, and their sums add in numpy's order.
        np.matmul(h2.transpose(0, 2, 1), dlogits, out=dW3)
        if self.compiled is None:
            np.sum(dlogits, axis=1, out=db3)
        else:
            self.compiled.sum_over_batch(dlogits, db3)
        np.matmul(dlogits, W3.transpose(0, 2, 1), out=dh2)
        if self.compiled is None:
            np.greater(h2, 0, out=mask2)
            dh2 *= mask2
            np.sum(dh2, axis=1, out=db2)
        else:
            self.compiled.relu_backward(dh2, h2, db2, self.dtype.type(0))
        np.matmul(h1_runs.transpose(0, 2, 1), dh2, out=dW2)
        np.matmul(dh2, W2.transpose(0, 2, 1), out=dh1_runs)
        if self.compiled is None:
            np.greater(h1, 0, out=mask1)
            dh1 *= mask1
            np.sum(dh1, axis=0, out=db1)
        else:  # dh1 (N, M*H1) is passed as one run of M*H1 units
            self.compiled.relu_backward(dh1[None], h1[None], db1[None], self.dtype.type(0))

        # Momentum update v = momentum * v - eps * grad; w = w + v, with per-run eps and momentum.
        if self.compiled is None:
            update_layer1_numpy(W1T, self.V[0], dW1T, dh1, xb, self.eps_rows, self.momentum_rows)
        else:
            # A hidden unit that no sample of the batch activates has dh1[:, r] == 0, so its
            # row of dW1T = dh1.T @ xb is zero (the data loader rejects non-finite inputs).
            # Only the other rows are computed: in the first epochs of 15 runs of [16, 32] on
            # the real data at batch size 100, 30 to 40 % of the units were inactive per batch.
            active = dh1.any(axis=0)  # NaN counts as nonzero
            num_active = int(np.count_nonzero(active))
            if num_active == active.shape[0]:
                np.matmul(dh1.T, xb, out=dW1T)
            elif num_active > 0:
                np.matmul(dh1[:, active].T, xb, out=dW1T[:num_active])
            self.compiled.update_layer1_active(W1T, self.V[0], dW1T, active, self.eps_rows, self.momentum_rows,
                                               np.finfo(self.dtype).tiny, self.dtype.type(0))
        for w, v, grad, eps, momentum in zip(
            self._weights()[1:], self.V[1:], self.grads[1:], self.eps_by_param[1:], self.momentum_by_param[1:]
        ):
            grad *= eps
            v *= momentum
            v -= grad
            w += v
        return ce_sum, correct

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return per-run mean cross-entropy and accuracy (M,) of the whole set x (N, D), y (N,)."""
        M, H1 = len(self.eps), self.H1
        num_samples = x.shape[0]
        total_ce = np.zeros(M)
        total_correct = np.zeros(M, dtype=np.int64)
        for start in range(0, num_samples, model.EVAL_CHUNK):
            stop = min(start + model.EVAL_CHUNK, num_samples)
            n = stop - start
            h1 = np.maximum(x[start:stop] @ self.W1T.T + self.b1, 0)
            h1_runs = h1.reshape(n, M, H1).transpose(1, 0, 2)
            h2 = np.maximum(np.matmul(h1_runs, self.W2) + self.b2[:, None, :], 0)
            logits = np.matmul(h2, self.W3) + self.b3[:, None, :]
            if self.compiled is None:
                shifted = logits - logits.max(axis=2, keepdims=True)
                log_probs = shifted - np.log(np.exp(shifted).sum(axis=2, keepdims=True))
                total_ce -= log_probs[:, np.arange(n), y[start:stop]].sum(axis=1)
                total_correct += np.count_nonzero(logits.argmax(axis=2) == y[start:stop], axis=1)
            else:
                ce_sum, correct = np.empty(M, self.dtype), np.empty(M, np.int64)
                # The gradient written to the scratch array is not needed.
                self.compiled.softmax_cross_entropy(logits, y[start:stop], np.empty_like(logits),
                                                    np.empty((M, n), self.dtype), ce_sum, correct)
                total_ce += ce_sum
                total_correct += correct
        return total_ce / num_samples, total_correct / num_samples

    def params_copy(self, slot: int) -> dict[str, np.ndarray]:
        """Return C-contiguous copies of run `slot`'s parameters, W1 as (D, H1)."""
        H1 = self.H1
        block = slice(slot * H1, (slot + 1) * H1)
        return {
            "W1": np.ascontiguousarray(self.W1T[block].T),
            "b1": self.b1[block].copy(),
            "W2": self.W2[slot].copy(),
            "b2": self.b2[slot].copy(),
            "W3": self.W3[slot].copy(),
            "b3": self.b3[slot].copy(),
        }
