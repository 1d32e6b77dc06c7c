"""Value checks of the schema and the command-line pre-check of overrides."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from tfd_sweep.config import check_values, run_spec, schema_keys, suggest_key
from tfd_sweep.overrides import check_command_line

BASE = OmegaConf.to_container(OmegaConf.load(__file__.rsplit("/tests/", 1)[0] + "/conf/config.yaml"))
BASE.pop("defaults")
BASE.pop("hydra")


def with_values(**changes):
    cfg = {key: (dict(value) if isinstance(value, dict) else value) for key, value in BASE.items()}
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            cfg[section][name] = value
        else:
            cfg[key] = value
    return cfg


def test_defaults_are_valid():
    assert check_values(with_values()) == []


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("eps", 0.0, "eps=0.0 is invalid: the learning rate must be > 0. Example: eps=0.01"),
        ("eps", -0.1, "eps=-0.1 is invalid: the learning rate must be > 0. Example: eps=0.01"),
        ("momentum", 1.0, "momentum=1.0 is invalid: momentum must be in [0, 1), 0 for plain SGD. Example: momentum=0.9"),
        ("momentum", -0.5, "momentum=-0.5 is invalid"),
        ("batch_size", 0, "batch_size=0 is invalid: batch_size must be >= 1, or -1 for the full training set"),
        ("batch_size", -2, "batch_size=-2 is invalid"),
        ("num_hiddens", [16, 0], "num_hiddens=[16,0] is invalid: num_hiddens must list 2 hidden-layer sizes, each >= 1"),
        ("num_hiddens", [16], "num_hiddens=[16] is invalid"),
        ("num_epochs", 0, "num_epochs=0 is invalid: num_epochs must be >= 1. Example: num_epochs=100"),
        ("dtype", "float16", "dtype=float16 is invalid: dtype must be one of float64, float32"),
        ("max_ce", 0.0, "max_ce=0.0 is invalid"),
        ("launcher__n_jobs", 0, "launcher.n_jobs=0 is invalid: n_jobs must be >= 1, or -1 for all cores"),
        ("launcher__backend", "ray", "launcher.backend=ray is invalid: backend must be one of loky, dask"),
        ("launcher__max_failures", 0, "launcher.max_failures=0 is invalid"),
        ("launcher__kernel", "cuda", "launcher.kernel=cuda is invalid"),
        ("report__lang", "fr", "report.lang=fr is invalid: lang must be one of en, ko"),
        ("report__metric", "valid_loss", "report.metric=valid_loss is invalid: metric must be one of"),
        ("report__mode", "lowest", "report.mode=lowest is invalid: mode must be min or max"),
    ],
)
def test_check_values_rejects_bad_value(key, value, expected):
    problems = check_values(with_values(**{key: value}))
    assert len(problems) == 1
    assert problems[0].startswith(expected)


def test_check_values_reports_every_problem_at_once():
    problems = check_values(with_values(eps=-1.0, momentum=1.5, num_epochs=0))
    assert [p.split("=")[0] for p in problems] == ["eps", "momentum", "num_epochs"]


def test_batch_size_minus_one_means_full_set():
    assert check_values(with_values(batch_size=-1)) == []


def test_run_spec_takes_course_names():
    spec = run_spec(with_values(eps=0.1, num_hiddens=[2, 4], dtype="float32"))
    assert spec.eps == 0.1
    assert spec.num_hiddens == (2, 4)
    assert spec.dtype == "float32"


def test_schema_keys_cover_sections():
    keys = schema_keys()
    assert "eps" in keys
    assert "launcher.n_jobs" in keys
    assert "data.path" in keys
    assert "report.lang" in keys


def test_suggest_key_finds_typo():
    assert suggest_key("momentun") == " Did you mean 'momentum'?"
    assert suggest_key("zzzz") == ""


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["epss=0.1"], "epss=0.1: unknown key 'epss'. Did you mean 'eps'?"),
        (["-m", "momentun=0,0.9"], "momentun=0,0.9: unknown key 'momentun'. Did you mean 'momentum'?"),
        (["launcher.njobs=2"], "launcher.njobs=2: unknown key 'launcher.njobs'. Did you mean 'launcher.n_jobs'?"),
        (["eps=[0.1,0.2]"], "eps=[0.1,0.2] is invalid: eps takes one value, not a list. To sweep over several values"),
        (["eps=abc"], "eps=abc is invalid: eps takes a number such as eps=0.01."),
        (["batch_size=1.5"], "batch_size=1.5 is invalid: batch_size takes a whole number such as batch_size=100."),
        (["num_hiddens=16"], "num_hiddens=16 is invalid: num_hiddens takes a list of whole numbers"),
        (["-m", "num_epochs=1,x"], "num_epochs=1,x is invalid: num_epochs takes a whole number"),
        (["launcher=2"], "launcher=2 is invalid: launcher is a section"),
    ],
)
def test_command_line_problem_message(argv, expected):
    problems = check_command_line(argv)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems[0]


def test_command_line_accepts_valid_sweeps():
    argv = ["-m", "eps=1e-5,0.1", "'num_hiddens=[2,2],[100,100]'".strip("'"), "+sweep=optimization",
            "hydra.sweep.dir=/tmp/x", "data.path=null", "launcher.address=null", "~hydra.callbacks.report"]
    assert check_command_line(argv) == []


def test_command_line_lists_all_problems():
    problems = check_command_line(["epss=1", "momentun=0.5", "batch_size=abc"])
    assert len(problems) == 3
