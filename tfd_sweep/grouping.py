"""Group the runs of a sweep for dispatch, and estimate their relative cost.

Runs with the same batch_size, num_hiddens, num_epochs, seed and dtype see the same initial
weights and the same mini-batches, so the stacked trainer can train them as one computation.
A group is the unit a worker receives. With stacking off, every group contains one run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from tfd_sweep.trainer import RunSpec

INPUT_SIZE = 2304
NUM_CLASSES = 7
TRAIN_SIZE = 3374  # the course file's training images; a cost estimate only
VALID_SIZE = 419
# Fixed cost of one optimizer step in multiply-adds: Python and numpy call overhead, about
# 50 microseconds per step measured on the 2-core machine in docs/benchmarks.md, at ~1e9 MAC/s.
STEP_OVERHEAD_MACS = 5e4


@dataclass(frozen=True)
class Job:
    """One run of a sweep: its Hydra job number, overrides, directory name and trainer spec."""

    num: int
    overrides: tuple[str, ...]
    subdir: str
    spec: RunSpec


@dataclass
class Group:
    """Runs trained together by one worker (stacked when more than one)."""

    jobs: list[Job]

    @property
    def cost(self) -> float:
        return group_cost([job.spec for job in self.jobs])


def run_cost(spec: RunSpec, train_size: int = TRAIN_SIZE) -> float:
    """Estimate the multiply-adds of one run alone, overhead included (a relative number)."""
    h1, h2 = spec.num_hiddens
    macs_per_example = INPUT_SIZE * h1 + h1 * h2 + h2 * NUM_CLASSES
    batch = train_size if spec.batch_size == -1 else min(spec.batch_size, train_size)
    steps = math.ceil(train_size / batch)
    per_epoch = 3 * macs_per_example * train_size + macs_per_example * VALID_SIZE + steps * STEP_OVERHEAD_MACS
    return per_epoch * spec.num_epochs


def group_cost(specs: Sequence[RunSpec], train_size: int = TRAIN_SIZE) -> float:
    """Estimate a stacked group's cost: the arithmetic adds up, the step overhead is paid once."""
    if not specs:
        return 0.0
    first = specs[0]
    batch = train_size if first.batch_size == -1 else min(first.batch_size, train_size)
    overhead = math.ceil(train_size / batch) * STEP_OVERHEAD_MACS * first.num_epochs
    arithmetic = sum(run_cost(spec, train_size) for spec in specs) - overhead * len(specs)
    return arithmetic + overhead


def make_groups(jobs: Sequence[Job], *, stack: bool, max_group_size: int, n_workers: int) -> list[Group]:
    """Group jobs that can train together, split groups so every worker has work, costliest first."""
    if not stack:
        groups = [Group([job]) for job in jobs]
    else:
        by_key: dict[tuple, list[Job]] = {}
        for job in jobs:
            by_key.setdefault(job.spec.group_key(), []).append(job)
        groups = []
        for members in by_key.values():
            for start in range(0, len(members), max_group_size):
                groups.append(Group(members[start:start + max_group_size]))

        # Split the costliest group in two until every worker has a group, or nothing splits.
        while groups and len(groups) < n_workers:
            groups.sort(key=lambda g: g.cost, reverse=True)
            largest = groups[0]
            if len(largest.jobs) < 2:
                break
            half = len(largest.jobs) // 2
            groups[0:1] = [Group(largest.jobs[:half]), Group(largest.jobs[half:])]

    groups.sort(key=lambda g: g.cost, reverse=True)
    return groups
