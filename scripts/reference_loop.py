"""Baseline for scripts/bench.py: the course's reference training loop, rewritten from its rules.

The model and training rule are those of tfd_sweep (2304 -> H1 -> H2 -> 7, ReLU, softmax
cross-entropy, momentum SGD, float64), but the code keeps the reference's habits on purpose,
because they are what the benchmark measures against:

- parameters, velocities and gradients live in dictionaries keyed by name, and every step
  builds a new dictionary of activations and a new dictionary of gradients;
- every step allocates fresh arrays (no buffers, no in-place products);
- the one-hot targets of each mini-batch are built when the batch is drawn;
- the softmax is the naive `exp(y) / sum(exp(y))` (it can overflow for large logits);
- the backward pass also computes layer 1's input gradient, which nothing uses;
- the per-epoch training metrics are those of the last mini-batch, and the validation set is
  evaluated after every epoch.

Nothing in the product imports this file.
"""

import numpy as np

NUM_CLASSES = 7


def init_params(num_inputs, num_hiddens, num_outputs, rng):
    """Return params and velocities as dicts: W1 (D, H1), b1 (H1,), W2, b2, W3 (H2, C), b3."""
    num_h1, num_h2 = num_hiddens
    params = {
        "W1": 0.1 * rng.standard_normal((num_inputs, num_h1)),
        "W2": 0.1 * rng.standard_normal((num_h1, num_h2)),
        "W3": 0.01 * rng.standard_normal((num_h2, num_outputs)),
        "b1": np.zeros(num_h1),
        "b2": np.zeros(num_h2),
        "b3": np.zeros(num_outputs),
    }
    velocities = {name: np.zeros_like(value) for name, value in params.items()}
    return params, velocities


def affine(x, w, b):
    return x.dot(w) + b


def affine_backward(grad_y, x, w):
    """Return (dx, dw, db) of y = x w + b for grad_y (N, K), x (N, D), w (D, K)."""
    dx = np.dot(grad_y, w.T)
    dw = np.dot(x.T, grad_y)
    db = np.sum(grad_y, axis=0)
    return dx, dw, db


def relu(x):
    return x * (x > 0)


def relu_backward(grad_y, x):
    return grad_y * (x > 0)


def softmax(y):
    """Return row-wise softmax of logits y (N, C), computed naively as the reference does."""
    exp_y = np.exp(y)
    return exp_y / np.sum(exp_y, axis=1, keepdims=True)


def one_hot(labels, num_classes=NUM_CLASSES):
    targets = np.zeros((labels.shape[0], num_classes))
    targets[np.arange(labels.shape[0]), labels] = 1.0
    return targets


def forward(params, x):
    """Return a new dict of activations for inputs x (N, D); 'y' is the logits (N, C)."""
    h1_in = affine(x, params["W1"], params["b1"])
    h1 = relu(h1_in)
    h2_in = affine(h1, params["W2"], params["b2"])
    h2 = relu(h2_in)
    y = affine(h2, params["W3"], params["b3"])
    return {"x": x, "h1_in": h1_in, "h1": h1, "h2_in": h2_in, "h2": h2, "y": y}


def backward(params, activations, grad_y):
    """Return a new dict of parameter gradients for grad_y (N, C) at the logits."""
    grads = {}
    grad_h2, grads["W3"], grads["b3"] = affine_backward(grad_y, activations["h2"], params["W3"])
    grad_h2_in = relu_backward(grad_h2, activations["h2_in"])
    grad_h1, grads["W2"], grads["b2"] = affine_backward(grad_h2_in, activations["h1"], params["W2"])
    grad_h1_in = relu_backward(grad_h1, activations["h1_in"])
    _, grads["W1"], grads["b1"] = affine_backward(grad_h1_in, activations["x"], params["W1"])
    return grads


def update(params, velocities, grads, eps, momentum):
    """Apply momentum SGD to every parameter: v = momentum * v - eps * grad, w = w + v."""
    for name in params:
        velocities[name] = momentum * velocities[name] - eps * grads[name]
        params[name] = params[name] + velocities[name]


def evaluate(params, x, labels, batch_size=1000):
    """Return (mean cross-entropy, accuracy) of a full pass over x (N, D), in batches."""
    ce_sum = 0.0
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        x_batch = x[start:start + batch_size]
        t_batch = one_hot(labels[start:start + batch_size])
        prediction = softmax(forward(params, x_batch)["y"])
        ce_sum += -np.sum(t_batch * np.log(prediction))
        correct += np.sum(np.argmax(prediction, axis=1) == np.argmax(t_batch, axis=1))
    return ce_sum / x.shape[0], correct / x.shape[0]


def train_epoch(params, velocities, x_train, y_train, batch_size, eps, momentum, rng):
    """Train one epoch over x_train (N, D) and return the last mini-batch's (ce, acc)."""
    num_train = x_train.shape[0]
    if batch_size == -1:
        batch_size = num_train
    perm = rng.permutation(num_train)
    x_train = x_train[perm]
    y_train = y_train[perm]
    num_steps = int(np.ceil(num_train / batch_size))
    train_ce = train_acc = float("nan")
    for step in range(num_steps):
        x_batch = x_train[step * batch_size:(step + 1) * batch_size]
        t_batch = one_hot(y_train[step * batch_size:(step + 1) * batch_size])
        activations = forward(params, x_batch)
        prediction = softmax(activations["y"])
        train_ce = -np.sum(t_batch * np.log(prediction)) / x_batch.shape[0]
        train_acc = np.mean(np.argmax(prediction, axis=1) == np.argmax(t_batch, axis=1))
        grad_y = (prediction - t_batch) / x_batch.shape[0]
        grads = backward(params, activations, grad_y)
        update(params, velocities, grads, eps, momentum)
    return train_ce, train_acc


def train(x_train, y_train, x_valid, y_valid, eps, momentum, batch_size, num_epochs,
          num_hiddens=(16, 32), seed=0, on_epoch=None):
    """Train one run and return (params, history), history a list of per-epoch dicts.

    on_epoch(epoch, row), when given, is called after each epoch (epoch is 1-based).
    """
    rng = np.random.default_rng(seed)
    params, velocities = init_params(x_train.shape[1], num_hiddens, NUM_CLASSES, rng)
    history = []
    with np.errstate(all="ignore"):
        for epoch in range(1, num_epochs + 1):
            train_ce, train_acc = train_epoch(params, velocities, x_train, y_train,
                                              batch_size, eps, momentum, rng)
            valid_ce, valid_acc = evaluate(params, x_valid, y_valid)
            row = {"epoch": epoch, "train_ce": train_ce, "train_acc": train_acc,
                   "valid_ce": valid_ce, "valid_acc": valid_acc}
            history.append(row)
            if on_epoch is not None:
                on_epoch(epoch, row)
    return params, history
