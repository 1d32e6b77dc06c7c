"""Shared fixtures: the real data file, and running the real command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FER_FILE = REPO.parent / "shared" / "data" / "fer2013_tfdformat.npz"


@pytest.fixture
def fer_file() -> Path:
    """The FER2013 stand-in for the course file; skip where it is absent."""
    if not FER_FILE.is_file():
        pytest.skip(f"real data file {FER_FILE} is absent (it lives outside the repository)")
    return FER_FILE


def tfd_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def run_tfd(args: list[str], cwd: Path, timeout: float = 240, module: str = "tfd_sweep",
            check: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m <module> <args>` in cwd and return the finished process (text output)."""
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=tfd_env(), capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture
def tfd():
    """Call as tfd(args, cwd) to run the real command in a subprocess."""
    return run_tfd
