"""Hydra launcher and sweeper plugins of tfd_sweep, selected in conf/config.yaml.

Hydra discovers launchers only inside the hydra_plugins namespace package, so this thin class
lives here and imports the real launcher (tfd_sweep.launcher) only when a sweep starts. Its
settings are the top-level `launcher:` section of conf/config.yaml, not hydra.launcher.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class TfdSweepLauncherConf:
    _target_: str = "hydra_plugins.tfd_sweep_launcher.tfd_sweep_launcher.TfdSweepLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="tfd_sweep", node=TfdSweepLauncherConf,
                             provider="tfd_sweep")


class TfdSweepLauncher(Launcher):
    def __init__(self, **kwargs: Any) -> None:
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from tfd_sweep.launcher import launch

        assert self.config is not None and self.hydra_context is not None
        return launch(self.config, self.hydra_context, job_overrides, initial_job_idx)


@dataclass
class TfdSweepSweeperConf:
    _target_: str = "hydra_plugins.tfd_sweep_launcher.tfd_sweep_launcher.TfdSweepSweeper"
    max_batch_size: Optional[int] = None  # as Hydra's basic sweeper: None launches every run at once
    params: Optional[Dict[str, str]] = None  # the grid, as in hydra.sweeper.params of the basic sweeper


ConfigStore.instance().store(group="hydra/sweeper", name="tfd_sweep", node=TfdSweepSweeperConf,
                             provider="tfd_sweep")


class TfdSweepSweeper(BasicSweeper):
    """Hydra's basic sweeper without its per-job composition check.

    The basic sweeper composes every job once to check it, then the launcher composes it again:
    about 0.1 s per job, a minute for 500 runs. The tfd_sweep launcher composes each job once,
    checks every value and reports every problem together, so the first pass is skipped.
    """

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        return None

    def sweep(self, arguments: List[str]) -> Any:
        # Hydra's sweeper creates the sweep directory and writes multirun.yaml before the launcher
        # can check the sweep. When the launcher rejects it (exit status 2, nothing trained), put
        # the directory back as it was: removed if this sweep made it, else its old multirun.yaml.
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        existed = sweep_dir.exists()
        record = sweep_dir / "multirun.yaml"
        before = record.read_bytes() if record.is_file() else None
        try:
            return super().sweep(arguments)
        except SystemExit as exc:
            if exc.code == 2:
                _restore_sweep_dir(sweep_dir, existed, before)
            raise


def _restore_sweep_dir(sweep_dir: Path, existed: bool, multirun_before: Optional[bytes]) -> None:
    record = sweep_dir / "multirun.yaml"
    if multirun_before is not None:
        record.write_bytes(multirun_before)
        return
    record.unlink(missing_ok=True)
    if not existed:
        (sweep_dir / ".sweep.lock").unlink(missing_ok=True)
        try:
            sweep_dir.rmdir()
        except OSError:
            pass  # not empty: something else lives there now, so it stays
