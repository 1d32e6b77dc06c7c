"""Typed configuration schema and value checks.

The defaults live in conf/config.yaml, each with a comment. The schema here gives every key its
type, so that OmegaConf rejects unknown keys and values of the wrong type, and the checks below
reject values of the right type that make no sense (eps <= 0, momentum of 1, ...).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, List, Optional

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from tfd_sweep.errors import ConfigError
from tfd_sweep.metrics import FINAL_METRICS, BEST_METRICS
from tfd_sweep.trainer import RunSpec

DTYPES = ("float64", "float32")
BACKENDS = ("loky", "dask")
LANGUAGES = ("en", "ko")
MODES = ("min", "max")
NUM_HIDDEN_LAYERS = 2


@dataclass
class DataConfig:
    path: Optional[str] = MISSING


@dataclass
class LauncherConfig:
    n_jobs: int = MISSING
    backend: str = MISSING
    address: Optional[str] = MISSING
    n_workers: Optional[int] = MISSING
    max_failures: Optional[int] = MISSING
    stack: bool = MISSING
    max_group_size: int = MISSING
    blas_threads: Optional[int] = MISSING
    kernel: str = MISSING
    progress_interval: float = MISSING


@dataclass
class ReportConfig:
    lang: str = MISSING
    metric: str = MISSING
    mode: str = MISSING


@dataclass
class Config:
    eps: float = MISSING
    momentum: float = MISSING
    batch_size: int = MISSING
    num_epochs: int = MISSING
    num_hiddens: List[int] = MISSING
    seed: int = MISSING
    dtype: str = MISSING
    check_grad: bool = MISSING
    max_ce: float = MISSING
    save_weights: bool = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


SCHEMA_NAME = "tfd_sweep_schema"


def register_schema() -> None:
    """Store the schema in Hydra's ConfigStore so that conf/config.yaml can build on it."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=Config)


def schema_keys() -> list[str]:
    """Return every dotted key of the schema, such as 'eps' and 'launcher.n_jobs'."""
    keys: list[str] = []

    def walk(cls: type, prefix: str) -> None:
        for f in fields(cls):
            default = f.default_factory() if callable(f.default_factory) else None  # type: ignore[misc]
            if is_dataclass(default):
                walk(type(default), f"{prefix}{f.name}.")
            else:
                keys.append(prefix + f.name)

    walk(Config, "")
    return keys


def suggest_key(key: str) -> str:
    """Return ' Did you mean 'x'?' for the closest schema key, or '' when none is close."""
    matches = difflib.get_close_matches(key, schema_keys(), n=1, cutoff=0.6)
    return f" Did you mean '{matches[0]}'?" if matches else ""


def _problem(key: str, value: Any, rule: str, example: str) -> str:
    return f"{key}={_show(value)} is invalid: {rule}. Example: {example}"


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple, ListConfig)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def check_values(cfg: DictConfig | dict) -> list[str]:
    """Return one message per invalid value in a composed config; an empty list means valid.

    Each message names the key, the value, the rule and an example of a valid value.
    """
    c = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    problems: list[str] = []

    if not c["eps"] > 0:
        problems.append(_problem("eps", c["eps"], "the learning rate must be > 0", "eps=0.01"))
    if not 0 <= c["momentum"] < 1:
        problems.append(
            _problem("momentum", c["momentum"], "momentum must be in [0, 1), 0 for plain SGD", "momentum=0.9")
        )
    if not (c["batch_size"] >= 1 or c["batch_size"] == -1):
        problems.append(
            _problem("batch_size", c["batch_size"], "batch_size must be >= 1, or -1 for the full training set",
                     "batch_size=100")
        )
    hiddens = list(c["num_hiddens"])
    if len(hiddens) != NUM_HIDDEN_LAYERS or any(h < 1 for h in hiddens):
        problems.append(
            _problem("num_hiddens", hiddens,
                     f"num_hiddens must list {NUM_HIDDEN_LAYERS} hidden-layer sizes, each >= 1", "'num_hiddens=[16,32]'")
        )
    if not c["num_epochs"] >= 1:
        problems.append(_problem("num_epochs", c["num_epochs"], "num_epochs must be >= 1", "num_epochs=100"))
    if c["dtype"] not in DTYPES:
        problems.append(_problem("dtype", c["dtype"], f"dtype must be one of {', '.join(DTYPES)}", "dtype=float32"))
    if not c["max_ce"] > 0:
        problems.append(
            _problem("max_ce", c["max_ce"], "the divergence bound on cross-entropy must be > 0", "max_ce=100")
        )

    launcher = c["launcher"]
    if launcher["n_jobs"] == 0 or launcher["n_jobs"] < -1:
        problems.append(
            _problem("launcher.n_jobs", launcher["n_jobs"], "n_jobs must be >= 1, or -1 for all cores",
                     "launcher.n_jobs=2")
        )
    if launcher["backend"] not in BACKENDS:
        problems.append(
            _problem("launcher.backend", launcher["backend"], f"backend must be one of {', '.join(BACKENDS)}",
                     "launcher.backend=dask")
        )
    if launcher["max_failures"] is not None and launcher["max_failures"] < 1:
        problems.append(
            _problem("launcher.max_failures", launcher["max_failures"],
                     "max_failures must be >= 1, or null to never stop early", "launcher.max_failures=3")
        )
    if launcher["max_group_size"] < 1:
        problems.append(
            _problem("launcher.max_group_size", launcher["max_group_size"], "max_group_size must be >= 1",
                     "launcher.max_group_size=32")
        )
    if launcher["blas_threads"] is not None and launcher["blas_threads"] < 1:
        problems.append(
            _problem("launcher.blas_threads", launcher["blas_threads"],
                     "blas_threads must be >= 1, or null to divide the cores among workers", "launcher.blas_threads=1")
        )
    if launcher["kernel"] not in ("auto", "numpy", "numba"):
        problems.append(
            _problem("launcher.kernel", launcher["kernel"], "kernel must be one of auto, numpy, numba",
                     "launcher.kernel=numpy")
        )

    report = c["report"]
    if report["lang"] not in LANGUAGES:
        problems.append(
            _problem("report.lang", report["lang"], f"lang must be one of {', '.join(LANGUAGES)}", "report.lang=ko")
        )
    metric_names = FINAL_METRICS + BEST_METRICS[1:]
    if report["metric"] not in metric_names:
        problems.append(
            _problem("report.metric", report["metric"], f"metric must be one of {', '.join(metric_names)}",
                     "report.metric=valid_acc")
        )
    if report["mode"] not in MODES:
        problems.append(
            _problem("report.mode", report["mode"], "mode must be min or max", "report.mode=max")
        )
    return problems


def validate(cfg: DictConfig | dict) -> None:
    """Raise ConfigError listing every invalid value of one composed config."""
    problems = check_values(cfg)
    if problems:
        raise ConfigError("Invalid configuration:\n  " + "\n  ".join(problems))


def run_spec(cfg: DictConfig | dict) -> RunSpec:
    """Build the trainer's plain-Python RunSpec from a composed (and validated) config."""
    c = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    return RunSpec(
        eps=float(c["eps"]),
        momentum=float(c["momentum"]),
        batch_size=int(c["batch_size"]),
        num_epochs=int(c["num_epochs"]),
        num_hiddens=tuple(int(h) for h in c["num_hiddens"]),
        seed=int(c["seed"]),
        dtype=str(c["dtype"]),
        check_grad=bool(c["check_grad"]),
        max_ce=float(c["max_ce"]),
    )
