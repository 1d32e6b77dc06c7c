"""Compiled (numba) kernels of stacked training; `tfd_sweep.stacked` holds the numpy reference.

Importing this module needs numba, so `tfd_sweep.stacked` imports it only when the numba kernels
are selected. The kernels compile on first use and are cached on disk (numba's cache=True).

Shapes: M runs, N samples, B samples per mini-batch, D inputs, H1 and H2 hidden units, C
classes. The kernels work in place on the stacked arrays of `stacked._Stack`: W1T and its
velocity V1 (M*H1, D) with run m's rows in [m*H1, (m+1)*H1), W2 (M, H1, H2), W3 (M, H2, C) and
the biases b1 (M*H1,), b2 (M, H2), b3 (M, C).

Why per-run epochs: at small batch sizes a step does little arithmetic but must read and write
all of layer 1's weights and velocities. Stepping all runs together passes over M runs' W1T
and V1 (8.8 MB for 15 runs of [16, 32] in float64) once per step, more than an L2 cache holds,
so each step streams them from memory (about 28 GB/s on the 2-core Xeon this was tuned on,
against about 90 GB/s from its 2 MB L2). `train_epoch_per_run` instead trains one run at a
time through the whole epoch: the run's W1T and V1 blocks (590 KB in float64) stay in L2, and
the layer-1 pass computes the next mini-batch's layer-1 output from each tile of weights right
after updating it, while the tile is in L1. The runs are independent, so the order does not
matter.

A run with momentum 0 keeps no layer-1 velocity: 0 * v is zero, so `w = w - eps * grad` rounds
as `v = 0 * v - eps * grad; w = w + v` and halves the bytes of its update. Its V1 rows stay zero.

Rounding: the update of every parameter rounds as `tfd_sweep.trainer` does (no fused
multiply-add, `v = momentum * v - eps * grad; w = w + v`, subnormal layer-1 velocities flushed to
zero). The matrix products add in their own order, so results differ from the numpy path's by
rounding.
"""

from __future__ import annotations

import numba
import numpy as np

# Columns per tile of the per-run layer-1 pass. Narrower tiles would keep more of x[batch] in L1
# cache, but each tile restarts every inner loop. On a 2-core AVX-512 Xeon (numba 0.68), 512 to
# 1152 columns ran fastest for batch sizes 10 to 32, and 144 ran 1.2x to 2x slower.
TILE_COLUMNS = 512


# Only dot products may reorder their additions (to use SIMD). The functions without
# fastmath flags keep IEEE rounding, and numba does not contract a * b + c into a fused
# multiply-add there, so the updates round as numpy's do.
@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "nsz"})
def dot(a, b, zero):
    """Return the dot product of the vectors a and b, summed in the arrays' dtype."""
    total = zero  # typed as the arrays' dtype, so float32 sums stay in float32
    for j in range(a.shape[0]):
        total += a[j] * b[j]
    return total


@numba.njit(nogil=True, cache=True)
def update_layer1(W1T, V1, grad, eps_rows, momentum_rows, tiny, zero):
    """Apply the momentum step to W1T, V1 (R, D) from grad (R, D) in one pass.

    eps_rows and momentum_rows (R,) hold each row's hyperparameters. Rows with momentum 0
    keep no velocity, as in `layer1_step`.
    """
    for r in range(W1T.shape[0]):
        _update_row(W1T[r], V1[r], grad[r], True, eps_rows[r], momentum_rows[r], tiny, zero)


@numba.njit(nogil=True, cache=True)
def update_layer1_active(W1T, V1, grad, active, eps_rows, momentum_rows, tiny, zero):
    """Apply the momentum step as `update_layer1` does, from the gradient rows of active units.

    active (R,) bool marks the rows whose gradient is not known to be zero, and grad (A, D)
    holds only those rows, in order (A = active.sum()). The other rows step with a zero
    gradient, which is not read.
    """
    k = 0
    for r in range(W1T.shape[0]):
        if active[r]:
            _update_row(W1T[r], V1[r], grad[k], True, eps_rows[r], momentum_rows[r], tiny, zero)
            k += 1
        else:
            _update_row(W1T[r], V1[r], grad[0], False, eps_rows[r], momentum_rows[r], tiny, zero)


@numba.njit(nogil=True, cache=True)
def _update_row(w_row, v_row, grad_row, has_grad, eps, momentum, tiny, zero):
    """Apply `v = momentum * v - eps * grad; w = w + v` to one row of W1T and V1.

    has_grad False means that grad_row is zero, and then it is not read. Skipping it changes no
    result: a step of zero is below tiny, and so is a velocity of +0 or -0, which the flush
    turns into +0 either way.
    """
    if momentum == zero:
        if not has_grad:
            return
        for j in range(w_row.shape[0]):
            step = eps * grad_row[j]
            if not abs(step) < tiny:  # the flush of subnormal velocities; NaN passes
                w_row[j] -= step
        return
    if has_grad:
        for j in range(w_row.shape[0]):
            v = momentum * v_row[j] - eps * grad_row[j]
            if abs(v) < tiny:
                v = zero
            v_row[j] = v
            w_row[j] += v
    else:
        for j in range(w_row.shape[0]):
            v = momentum * v_row[j]
            if abs(v) < tiny:
                v = zero
            v_row[j] = v
            w_row[j] += v


@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "nsz"})
def dot4(w, x0, x1, x2, x3, zero):
    """Return the dot products of w with x0, x1, x2, x3, in one pass over w."""
    s0 = s1 = s2 = s3 = zero
    for j in range(w.shape[0]):
        s0 += w[j] * x0[j]
        s1 += w[j] * x1[j]
        s2 += w[j] * x2[j]
        s3 += w[j] * x3[j]
    return s0, s1, s2, s3


@numba.njit(nogil=True, cache=True)
def tile_gradient(coefficients, samples, x, start, stop, grad):
    """Write grad[:stop - start] = sum over i of coefficients[i] * x[samples[i], start:stop].

    Needs at least one term. Four terms are added per pass, so that grad is loaded and
    stored once per four samples. A single term is rounded once, as numpy's outer product.
    """
    width = stop - start
    count = coefficients.shape[0]
    first = count % 4
    if first == 0:
        first = 4
    # The first group (1 to 4 terms) writes grad, later groups of four add to it.
    c0 = coefficients[0]
    x0 = x[samples[0], start:stop]
    if first == 1:
        for j in range(width):
            grad[j] = c0 * x0[j]
    elif first == 2:
        c1, x1 = coefficients[1], x[samples[1], start:stop]
        for j in range(width):
            grad[j] = c0 * x0[j] + c1 * x1[j]
    elif first == 3:
        c1, x1 = coefficients[1], x[samples[1], start:stop]
        c2, x2 = coefficients[2], x[samples[2], start:stop]
        for j in range(width):
            grad[j] = c0 * x0[j] + c1 * x1[j] + c2 * x2[j]
    else:
        c1, x1 = coefficients[1], x[samples[1], start:stop]
        c2, x2 = coefficients[2], x[samples[2], start:stop]
        c3, x3 = coefficients[3], x[samples[3], start:stop]
        for j in range(width):
            grad[j] = c0 * x0[j] + c1 * x1[j] + c2 * x2[j] + c3 * x3[j]
    for i in range(first, count, 4):
        c0, x0 = coefficients[i], x[samples[i], start:stop]
        c1, x1 = coefficients[i + 1], x[samples[i + 1], start:stop]
        c2, x2 = coefficients[i + 2], x[samples[i + 2], start:stop]
        c3, x3 = coefficients[i + 3], x[samples[i + 3], start:stop]
        for j in range(width):
            grad[j] += c0 * x0[j] + c1 * x1[j] + c2 * x2[j] + c3 * x3[j]


@numba.njit(nogil=True, cache=True)
def layer1_step(W1, V1, dh1, x, batch, next_batch, eps, momentum, tile, grad, a1_next, tiny, zero):
    """Update one run's W1, V1 (H1, D) in place and compute the next batch's layer-1 output.

    dh1 (n, H1) is the gradient at the layer-1 pre-activations of the samples x[batch].
    a1_next (n_next, H1) receives W1 @ x[next_batch[b]] from the updated weights. The pass
    walks the columns in tiles of `tile` entries, so the tiles of x[batch] and x[next_batch]
    stay in cache while every row uses them. Each row's tile is still in L1 cache when its
    dot products are taken. grad (tile,) is scratch.

    A run with momentum 0 keeps no velocity: 0 * v is zero, so `w = w - eps * grad`
    rounds as `v = 0 * v - eps * grad; w = w + v` without reading or writing V1.
    """
    num_hidden, num_inputs = W1.shape
    n, n_next = batch.shape[0], next_batch.shape[0]

    # Collect the nonzero terms of each row's gradient. The ReLU zeroes about half of them,
    # and a zero term adds nothing, so skipping it keeps the sum.
    counts = np.zeros(num_hidden, np.int64)
    coefficients = np.empty((num_hidden, n), W1.dtype)
    samples = np.empty((num_hidden, n), np.int64)
    for r in range(num_hidden):
        for b in range(n):
            if dh1[b, r] != zero:
                coefficients[r, counts[r]] = dh1[b, r]
                samples[r, counts[r]] = batch[b]
                counts[r] += 1

    a1_next[:, :] = zero
    for start in range(0, num_inputs, tile):
        stop = min(start + tile, num_inputs)
        width = stop - start
        for r in range(num_hidden):
            w = W1[r, start:stop]
            has_grad = counts[r] > 0
            if has_grad:
                tile_gradient(coefficients[r, :counts[r]], samples[r, :counts[r]], x, start, stop, grad)
            if momentum == zero:
                if has_grad:
                    for j in range(width):
                        step = eps * grad[j]
                        if not abs(step) < tiny:  # the flush of subnormal velocities; NaN passes
                            w[j] -= step
            else:
                if not has_grad:
                    grad[:width] = zero
                v_tile = V1[r, start:stop]
                for j in range(width):
                    v = momentum * v_tile[j] - eps * grad[j]
                    if abs(v) < tiny:
                        v = zero
                    v_tile[j] = v
                    w[j] += v

            b = 0
            while b + 4 <= n_next:
                s0, s1, s2, s3 = dot4(w, x[next_batch[b], start:stop], x[next_batch[b + 1], start:stop],
                                      x[next_batch[b + 2], start:stop], x[next_batch[b + 3], start:stop], zero)
                a1_next[b, r] += s0
                a1_next[b + 1, r] += s1
                a1_next[b + 2, r] += s2
                a1_next[b + 3, r] += s3
                b += 4
            for b in range(b, n_next):
                a1_next[b, r] += dot(w, x[next_batch[b], start:stop], zero)


@numba.njit(nogil=True, cache=True)
def momentum_step(w, v, grad, eps, momentum):
    """Apply `v = momentum * v - eps * grad; w = w + v` to flat arrays w, v, grad."""
    for j in range(w.shape[0]):
        v[j] = momentum * v[j] - eps * grad[j]
        w[j] += v[j]


@numba.njit(nogil=True, cache=True)
def relu(value, zero):
    """Return max(value, 0), NaN for NaN as np.maximum does."""
    return zero if value < zero else value


@numba.njit(nogil=True, cache=True)
def argmax_first_nan(row):
    """Return the index of the maximum of `row`, or of its first NaN, as np.argmax does."""
    best = 0
    for c in range(1, row.shape[0]):
        if np.isnan(row[best]):
            break
        if row[c] > row[best] or np.isnan(row[c]):
            best = c
    return best


def softmax_cross_entropy(logits, labels, probs, row_max, ce_out, correct_out):
    """Compute every run's softmax cross-entropy and its gradient at the logits.

    logits (M, n, C) are left unchanged. probs (M, n, C) receives dlogits = (p - t) / n, where
    p is the softmax of the logits, and row_max (M, n) is scratch. ce_out (M,) receives the
    summed cross-entropy in the arrays' dtype, and correct_out (M,) the correct predictions.
    Each entry rounds as in the numpy step. Only the sum over the batch adds in another order.

    numpy spends most of this work in calls that reduce axes of only C entries. The numba
    kernels do those per row, but numpy's vectorized exp was about 8x faster than numba's
    scalar one (numba 0.68 without SVML), so the exponentials stay in numpy.
    """
    _shift_logits(logits, labels, probs, row_max, correct_out)
    np.exp(probs, out=probs)
    _normalize_softmax(probs, logits, labels, row_max, ce_out, logits.dtype.type(0))


@numba.njit(nogil=True, cache=True, inline="always")
def _argmax_first_nan(logits, m, b):
    """Return the index of the maximum of logits[m, b], or of its first NaN, as np.argmax does.

    It indexes the 3-d array directly, because taking each row as a view made the pass about
    4x slower (measured with numba 0.68).
    """
    best = 0
    best_value = logits[m, b, 0]
    if np.isnan(best_value):
        return 0
    for c in range(1, logits.shape[2]):
        value = logits[m, b, c]
        if np.isnan(value):
            return c
        if value > best_value:
            best = c
            best_value = value
    return best


@numba.njit(nogil=True, cache=True)
def _shift_logits(logits, labels, shifted, row_max, correct_out):
    """Write shifted = logits - row_max and count each run's correct predictions (M,).

    The row maximum is the entry at the argmax, which is NaN when the row has a NaN, as
    np.max's maximum is.
    """
    num_runs, n, num_classes = logits.shape
    for m in range(num_runs):
        correct = 0
        for b in range(n):
            best = _argmax_first_nan(logits, m, b)
            if best == labels[b]:
                correct += 1
            row_max[m, b] = logits[m, b, best]
            for c in range(num_classes):
                shifted[m, b, c] = logits[m, b, c] - row_max[m, b]
        correct_out[m] = correct


# error_model="numpy": a division by zero gives inf or NaN as in numpy, instead of raising.
@numba.njit(nogil=True, cache=True, error_model="numpy")
def _normalize_softmax(probs, logits, labels, row_max, ce_out, zero):
    """Turn probs = exp(logits - row_max) (M, n, C) into (p - t) / n in place.

    ce_out (M,) receives the summed cross-entropy of each run.
    """
    num_runs, n, num_classes = logits.shape
    for m in range(num_runs):
        batch_ce = zero
        for b in range(n):
            label = labels[b]
            row_sum = zero
            for c in range(num_classes):
                row_sum += probs[m, b, c]
            batch_ce += np.log(row_sum) - (logits[m, b, label] - row_max[m, b])
            for c in range(num_classes):
                probs[m, b, c] /= row_sum
            probs[m, b, label] -= 1
            for c in range(num_classes):
                probs[m, b, c] /= n
        ce_out[m] = batch_ce


@numba.njit(nogil=True, cache=True)
def add_bias(a, bias, apply_relu, zero):
    """Add bias (M, K) to every row of a (M, n, K) in place, then apply the ReLU if apply_relu.

    Rounds as numpy's `a += bias[:, None, :]` and `np.maximum(a, 0, out=a)`, in one pass
    instead of two calls.
    """
    num_runs, n, width = a.shape
    for m in range(num_runs):
        for b in range(n):
            for k in range(width):
                value = a[m, b, k] + bias[m, k]
                a[m, b, k] = relu(value, zero) if apply_relu else value


@numba.njit(nogil=True, cache=True)
def sum_over_batch(a, out):
    """Write out (M, K) = a (M, n, K) summed over its batch axis, for n >= 1.

    Adds in order of the batch index, starting from the first term, as np.sum(a, axis=1) does
    on a C-contiguous array, so the sums round alike. numpy 2.4 took 0.2 to 0.35 ms for it on
    (15, 1000, 7) and (15, 1000, 32) float64 arrays (2-core Xeon), mostly in loops over the
    short last axis.
    """
    num_runs, n, width = a.shape
    for m in range(num_runs):
        for k in range(width):
            out[m, k] = a[m, 0, k]
        for b in range(1, n):
            for k in range(width):
                out[m, k] += a[m, b, k]


@numba.njit(nogil=True, cache=True)
def relu_backward(grad, h, bias_grad, zero):
    """Mask grad (M, n, K) in place where the ReLU output h (M, n, K) is not positive; sum it.

    bias_grad (M, K) receives the masked grad summed over the batch as `sum_over_batch` does.
    A masked entry is multiplied by zero, as numpy's multiplication by a boolean mask does, so
    NaN stays NaN.
    """
    num_runs, n, width = grad.shape
    for m in range(num_runs):
        for b in range(n):
            for k in range(width):
                if not h[m, b, k] > zero:
                    grad[m, b, k] *= zero
    sum_over_batch(grad, bias_grad)


@numba.njit(nogil=True, cache=True)
def forward_loss(a1, b1, W2, b2, W3, b3, labels, h2, probs, shifted, zero):
    """Run one run's forward pass on a batch of n = labels.shape[0] samples, in place.

    a1 (n, H1) contains the layer-1 pre-activations and receives h1 = relu(a1 + b1); h2 (n, H2)
    receives relu(h1 W2 + b2); probs (n, C) receives dlogits = (p - t) / n, where p is the
    softmax of the logits h2 W3 + b3. shifted (C,) is scratch. Returns the summed
    cross-entropy (in the arrays' dtype) and the number of correct predictions.
    """
    n = labels.shape[0]
    num_hidden1, num_hidden2 = W2.shape
    num_classes = W3.shape[1]
    for b in range(n):
        for i in range(num_hidden1):
            a1[b, i] = relu(a1[b, i] + b1[i], zero)
    for b in range(n):
        for k in range(num_hidden2):
            total = zero
            for i in range(num_hidden1):
                total += a1[b, i] * W2[i, k]
            h2[b, k] = relu(total + b2[k], zero)

    batch_ce = zero
    correct = 0
    for b in range(n):
        for c in range(num_classes):
            total = zero
            for k in range(num_hidden2):
                total += h2[b, k] * W3[k, c]
            shifted[c] = total + b3[c]
        label = labels[b]
        if argmax_first_nan(shifted) == label:
            correct += 1

        # Log-softmax with the row maximum subtracted; a NaN maximum propagates, as np.max's.
        row_max = shifted[0]
        for c in range(1, num_classes):
            if shifted[c] > row_max or np.isnan(shifted[c]):
                row_max = shifted[c]
        row_sum = zero
        for c in range(num_classes):
            shifted[c] -= row_max
            probs[b, c] = np.exp(shifted[c])
            row_sum += probs[b, c]
        batch_ce += np.log(row_sum) - shifted[label]
        for c in range(num_classes):
            probs[b, c] /= row_sum
        probs[b, label] -= 1
        for c in range(num_classes):
            probs[b, c] /= n
    return batch_ce, correct


@numba.njit(nogil=True, cache=True, inline="always")
def _affine_relu_backward(h, dy, W, dW, db, dh, zero):
    """Backward of y = h W + b where h = relu(a): dW (K*J,) flat, db (J,) and dh at a (n, K).

    h (n, K) is the ReLU output feeding the layer, dy (n, J) the gradient at y, W (K, J).
    """
    n, num_in = h.shape
    num_out = dy.shape[1]
    for i in range(num_in):
        for j in range(num_out):
            total = zero
            for b in range(n):
                total += h[b, i] * dy[b, j]
            dW[i * num_out + j] = total
    for j in range(num_out):
        total = zero
        for b in range(n):
            total += dy[b, j]
        db[j] = total
    for b in range(n):
        for i in range(num_in):
            total = zero
            for j in range(num_out):
                total += dy[b, j] * W[i, j]
            dh[b, i] = total if h[b, i] > zero else total * zero


@numba.njit(nogil=True, cache=True)
def backward(h1, h2, dlogits, W2, W3, dh2, dh1, dW2, db2, dW3, db3, db1, zero):
    """Compute one run's gradients from dlogits (n, C), except layer 1's weight gradient.

    h1 (n, H1) and h2 (n, H2) are the ReLU outputs. Writes dh2 (n, H2), dh1 (n, H1) (the
    gradients at the pre-activations), dW2 (H1*H2,), dW3 (H2*C,) flat, and the bias
    gradients db1, db2, db3. The ReLU masks multiply, as numpy's do, so NaN stays NaN.
    """
    _affine_relu_backward(h2, dlogits, W3, dW3, db3, dh2, zero)
    _affine_relu_backward(h1, dh2, W2, dW2, db2, dh1, zero)
    n = dlogits.shape[0]
    num_hidden1 = W2.shape[0]
    for i in range(num_hidden1):
        total = zero
        for b in range(n):
            total += dh1[b, i]
        db1[i] = total


@numba.njit(nogil=True, cache=True)
def train_run_epoch(x, y, perm, batch_size, W1, b1, W2, b2, W3, b3, V1, vb1, V2, vb2, V3, vb3,
                    eps, momentum, tiny, zero):
    """Train one run for one epoch in place; return its summed cross-entropy and correct count.

    x (N, D), y (N,), perm (N,) the epoch's order; W1, V1 (H1, D); b1 (H1,); W2 (H1, H2);
    b2 (H2,); W3 (H2, C); b3 (C,), with velocities of the same shapes.
    """
    num_hidden1, num_inputs = W1.shape
    num_hidden2, num_classes = W3.shape
    num_samples = perm.shape[0]
    B, dtype = batch_size, W1.dtype

    a1 = np.empty((B, num_hidden1), dtype)  # layer-1 pre-activations, then h1
    a1_next = np.empty((B, num_hidden1), dtype)
    h2, dh2 = np.empty((B, num_hidden2), dtype), np.empty((B, num_hidden2), dtype)
    probs, shifted = np.empty((B, num_classes), dtype), np.empty(num_classes, dtype)
    labels = np.empty(B, np.int64)
    dh1, db1 = np.empty((B, num_hidden1), dtype), np.empty(num_hidden1, dtype)
    dW2, db2 = np.empty(num_hidden1 * num_hidden2, dtype), np.empty(num_hidden2, dtype)
    dW3, db3 = np.empty(num_hidden2 * num_classes, dtype), np.empty(num_classes, dtype)
    tile = min(num_inputs, TILE_COLUMNS)
    grad = np.empty(tile, dtype)

    # Later batches get their layer-1 output from the previous step's layer-1 pass.
    first = perm[0:min(B, num_samples)]
    for b in range(first.shape[0]):
        for r in range(num_hidden1):
            a1[b, r] = dot(W1[r], x[first[b]], zero)

    total_ce = 0.0
    total_correct = 0
    for start in range(0, num_samples, B):
        batch = perm[start:min(start + B, num_samples)]
        next_batch = perm[min(start + B, num_samples):min(start + 2 * B, num_samples)]
        n = batch.shape[0]
        for b in range(n):
            labels[b] = y[batch[b]]

        batch_ce, correct = forward_loss(a1[:n], b1, W2, b2, W3, b3, labels[:n], h2, probs, shifted, zero)
        total_ce += batch_ce
        total_correct += correct
        backward(a1[:n], h2[:n], probs[:n], W2, W3, dh2, dh1, dW2, db2, dW3, db3, db1, zero)

        # Momentum updates; the layer-1 pass also computes the next batch's layer-1 output.
        layer1_step(W1, V1, dh1[:n], x, batch, next_batch, eps, momentum, tile, grad, a1_next, tiny, zero)
        momentum_step(b1, vb1, db1, eps, momentum)
        momentum_step(W2.reshape(-1), V2.reshape(-1), dW2, eps, momentum)
        momentum_step(b2, vb2, db2, eps, momentum)
        momentum_step(W3.reshape(-1), V3.reshape(-1), dW3, eps, momentum)
        momentum_step(b3, vb3, db3, eps, momentum)
        a1, a1_next = a1_next, a1
    return total_ce, total_correct


@numba.njit(nogil=True, cache=True)
def train_epoch_per_run(x, y, perm, batch_size, W1T, b1, W2, b2, W3, b3, V1, vb1, V2, vb2, V3, vb3,
                        eps, momentum, tiny, zero, ce_out, correct_out):
    """Train each of the M runs for one epoch, one run after the other, in place.

    Writes per-run summed cross-entropy to ce_out (M,) float64 and correct predictions to
    correct_out (M,) int64.
    """
    num_hidden1 = W2.shape[1]
    for m in range(eps.shape[0]):
        rows = slice(m * num_hidden1, (m + 1) * num_hidden1)
        ce_out[m], correct_out[m] = train_run_epoch(
            x, y, perm, batch_size, W1T[rows], b1[rows], W2[m], b2[m], W3[m], b3[m],
            V1[rows], vb1[rows], V2[m], vb2[m], V3[m], vb3[m], eps[m], momentum[m], tiny, zero,
        )
