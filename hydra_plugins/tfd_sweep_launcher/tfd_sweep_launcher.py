"""Hydra launcher plugin of tfd_sweep, selected by `override hydra/launcher: tfd_sweep`.

Hydra discovers launchers only inside the hydra_plugins namespace package, so this thin class
lives here and imports the real launcher (tfd_sweep.launcher) only when a sweep starts. Its
settings are the top-level `launcher:` section of conf/config.yaml, not hydra.launcher.
"""

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
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
