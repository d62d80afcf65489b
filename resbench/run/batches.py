"""Trial batches: the driver's side of a group's trials split across several jobs.

With one job per group, an executor with more workers than groups leaves workers idle. An executor that
declares a ``trial_batch`` therefore gets each group's trials as jobs of at most that many trial indices
(:class:`~resbench.run.jobs.GroupJob` with ``batches``), in rounds:

1. the trials every cell needs whatever its results (up to the trial policy's minimum count); one job
   of each group also yields the group's cells (its ``describe`` job);
2. while the adaptive rule asks for more, each cell that still needs trials gets its next ones: as many
   as its interval's width suggests, at most a batch.

Rows reach the store in trial order per cell, and only while the cell still needs them by
:func:`~resbench.run.campaign.trials_needed`, the rule of the whole-group campaign: a row that arrives
early waits for the rows before it, and rows computed past a cell's stopping point are dropped. So a
split run stores exactly the rows of an unsplit one, and a killed split run leaves every cell a prefix
of its trials, which the rerun continues.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from resbench.engine.estimator import CellDesign
from resbench.run.campaign import TrialBatch, trials_needed
from resbench.run.cells import Group, StoredTrials
from resbench.run.jobs import CellsReady, GroupJob, JobContext
from resbench.run.store import CellFailure, TrialRow

__all__ = ["TrialBatches"]


@dataclass
class _Cell:
    """What the driver knows of one faulty cell of a split group."""

    group: int
    fault: str
    #: The cell's index in its fault model's BER sweep (its index in the campaign's plan).
    index: int
    #: Accuracy per trial: stored before this run or written by it, a prefix of the cell's trials.
    done: dict[int, float]
    #: Rows computed but not written yet: waiting for an earlier trial, or for the cell's record.
    held: dict[int, TrialRow] = field(default_factory=dict)
    #: How the cell's trials become its estimate; known once its record arrives.
    design: CellDesign | None = None
    failed: bool = False
    #: The first trial index the cell lacks.
    frontier: int = 0

    def __post_init__(self) -> None:
        self._advance()

    def _advance(self) -> None:
        while self.frontier in self.done:
            self.frontier += 1

    def next_trials(self, count: int) -> list[int]:
        """The first ``count`` trial indices the cell lacks."""
        trials: list[int] = []
        trial = self.frontier
        while len(trials) < count:
            if trial not in self.done:
                trials.append(trial)
            trial += 1
        return trials

    def record(self, row: TrialRow) -> None:
        """``row`` is written: the next trial of the cell's prefix."""
        self.done[row.trial] = row.accuracy
        self._advance()


class TrialBatches:
    """The rounds of trial-batch jobs of the groups of one run, and which of their rows to write."""

    def __init__(self, context: JobContext, trial_batch: int) -> None:
        if trial_batch < 1:
            raise ValueError(f"trial_batch must be at least 1, not {trial_batch}")
        self.context = context
        self.policy = context.suite.trials
        self.size = trial_batch
        self.groups: list[Group] = []
        self.cells: dict[str, _Cell] = {}
        self.rounds = 0
        #: Rows computed and not written: past a cell's stopping point, or of a cell that failed.
        self.discarded = 0
        self._progress = 0  # rows written and cells described: a round that adds none would repeat itself
        self._progress_at_last_round = -1

    def add(self, group: Group, stored: StoredTrials) -> None:
        """A group whose trials are split, with what the store holds of its cells."""
        keys = self.context.keys
        self.groups.append(group)
        for fault_spec in self.context.suite.faults:
            for index, ber in enumerate(keys.bers(fault_spec)):
                cell_id = keys.cell_id(group, fault_spec, ber)
                self.cells[cell_id] = _Cell(len(self.groups) - 1, fault_spec.label, index,
                                            dict(sorted(stored.get(cell_id, {}).items())))

    # -- planning ---------------------------------------------------------------------------------------------

    def next_round(self) -> list[GroupJob]:
        """The jobs of the next round; none when no cell needs another trial."""
        self._drop_held()
        first = self.rounds == 0
        self.rounds += 1
        jobs: list[GroupJob] = []
        for number, group in enumerate(self.groups):
            due: dict[str, dict[int, list[int]]] = {}
            for cell in self.cells.values():
                if cell.group == number and not cell.failed:
                    for trial in cell.next_trials(self._due(cell)):
                        due.setdefault(cell.fault, {}).setdefault(trial, []).append(cell.index)
            batches = self._split(due)
            if first:  # every group's first job describes its cells, even with no trial to run
                lead = batches.pop(0) if batches else {}
                jobs.append(GroupJob(self.context, group, {}, lead, describe=True))
            jobs.extend(GroupJob(self.context, group, {}, batch, describe=False) for batch in batches)
        if jobs and self._progress == self._progress_at_last_round:
            raise RuntimeError("a round of trial batches changed nothing: the executor lost its jobs' outputs")
        self._progress_at_last_round = self._progress
        return jobs

    def _due(self, cell: _Cell) -> int:
        """How many more trials the cell gets this round."""
        policy = self.policy
        count = len(cell.done)
        if count < policy.trials:
            return policy.trials - count
        if cell.design is None or not trials_needed(list(cell.done.values()), policy, cell.design):
            return 0  # met, or adaptive and waiting for its record
        # Adaptive: the interval narrows as 1/sqrt(n); ask for the trials that would reach the target.
        _, low, high = cell.design.estimate(list(cell.done.values()))
        assert policy.ci_halfwidth is not None and policy.max_trials is not None
        wanted = math.ceil(count * ((high - low) / 2 / policy.ci_halfwidth) ** 2) - count
        return max(1, min(wanted, self.size, policy.max_trials - count))

    def _split(self, due: dict[str, dict[int, list[int]]]) -> list[dict[str, TrialBatch]]:
        """Jobs' worth of the due trials: at most ``size`` trial indices each, every fault model's cells
        that need a trial index in the same job (a trial's sites are drawn once for all its cells)."""
        trials = sorted({trial for by_trial in due.values() for trial in by_trial})
        batches = []
        for start in range(0, len(trials), self.size):
            chunk = trials[start:start + self.size]
            batch = {fault: tuple((trial, tuple(sorted(by_trial[trial]))) for trial in chunk if trial in by_trial)
                     for fault, by_trial in due.items()}
            batches.append({fault: pairs for fault, pairs in batch.items() if pairs})
        return batches

    # -- what the jobs yield ----------------------------------------------------------------------------------

    def ready(self, output: CellsReady) -> list[TrialRow]:
        """The cells' records are written: their designs are known, and rows held for them may go."""
        rows = []
        for record in output.cells[1:]:
            cell = self.cells.get(record.cell_id)
            if cell is not None:
                cell.design = CellDesign(record.zero_flip_probability, output.clean_row.accuracy)
                self._progress += 1
                rows.extend(self._release(cell))
        return rows

    def offer(self, row: TrialRow) -> list[TrialRow]:
        """The rows to write now that ``row`` arrived (it, rows it was holding up, or none)."""
        cell = self.cells.get(row.cell_id)
        if cell is None:
            return [row]
        if cell.failed or row.trial in cell.done:
            self.discarded += 1
            return []
        cell.held[row.trial] = row
        return self._release(cell)

    def failed(self, failures: Iterable[CellFailure]) -> None:
        """Cells that failed get no more trials; their held rows are dropped."""
        for failure in failures:
            cell = self.cells.get(failure.cell_id)
            if cell is not None and not cell.failed:
                cell.failed = True
                self._progress += 1
                self.discarded += len(cell.held)
                cell.held.clear()

    def _release(self, cell: _Cell) -> list[TrialRow]:
        """Held rows that continue the cell's prefix of trials, while the cell still needs them."""
        rows: list[TrialRow] = []
        if cell.design is None:
            return rows  # its record is not in the store yet
        while (row := cell.held.pop(cell.frontier, None)) is not None:
            if not trials_needed(list(cell.done.values()), self.policy, cell.design):
                self.discarded += 1 + len(cell.held)
                cell.held.clear()
                break
            cell.record(row)
            self._progress += 1
            rows.append(row)
        return rows

    def _drop_held(self) -> None:
        """Rows still held when a round ends wait for a trial that will not come this round: drop them
        (the next round asks for them again)."""
        for cell in self.cells.values():
            self.discarded += len(cell.held)
            cell.held.clear()
