"""Names of metrics, splits and run statuses, defined once for every module and file."""

SPLITS = ("train", "valid", "test")
MEASURES = ("ce", "acc")  # mean cross-entropy in nats, accuracy as a fraction in [0, 1]

# Final full-pass metrics of a run: train_ce, train_acc, valid_ce, ..., test_acc.
FINAL_METRICS = tuple(f"{split}_{measure}" for split in SPLITS for measure in MEASURES)

# Per-epoch history columns. train_* are averaged over the epoch's mini-batches, weighted
# by batch size, while the weights were changing; valid_* are a full pass after the epoch.
HISTORY_COLUMNS = ("epoch", "train_ce", "train_acc", "valid_ce", "valid_acc")

# The epoch with the lowest validation cross-entropy and the values at that epoch.
BEST_METRICS = ("best_epoch", "best_valid_ce", "best_valid_acc", "best_train_ce", "best_train_acc")

# The course's hyperparameters, the names used from the command line to the CSV columns.
HYPERPARAMETERS = ("eps", "momentum", "batch_size", "num_epochs", "num_hiddens", "seed", "dtype")

STATUS_OK = "ok"
STATUS_DIVERGED = "diverged"
STATUS_FAILED = "failed"
STATUSES = (STATUS_OK, STATUS_DIVERGED, STATUS_FAILED)
# A planned run of a sweep without result.json: not started, or stopped before it finished.
STATUS_NOT_RUN = "not run"

# File names inside a run directory.
RESULT_FILE = "result.json"
HISTORY_FILE = "history.csv"
WEIGHTS_FILE = "weights.npz"
CURVES_FILE = "curves.png"
TRACEBACK_FILE = "traceback.txt"

# File names inside a sweep directory.
SWEEP_FILE = "sweep.json"
