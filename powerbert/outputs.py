"""Per-example model outputs on a labelled split: what a run leaves behind for the ensembles.

One `TaskOutputs` holds one model's outputs for one task over one file, in file order. The
meaning of `outputs` depends on the task kind (see `powerbert.tasks`): logits [N, C] for
classify, one logit [N] for binary, the predicted score [N] for regress.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from powerbert.tasks import TASKS

if TYPE_CHECKING:
    import numpy as np


@dataclass
class TaskOutputs:
    task: str  # task name, a key of TASKS
    ids: list[str]  # example ids in file order
    gold: np.ndarray  # [N] gold labels (NaN where the file had none)
    outputs: np.ndarray  # [N, C] or [N], see the module docstring

    def __post_init__(self) -> None:
        import numpy as np  # here: the store imports this module for every command

        self.gold = np.asarray(self.gold, dtype=np.float64)
        self.outputs = np.asarray(self.outputs, dtype=np.float64)
        if len(self.ids) != len(self.gold) or len(self.ids) != len(self.outputs):
            raise ValueError(
                f"{self.task} outputs: {len(self.ids)} ids, {len(self.gold)} labels and "
                f"{len(self.outputs)} outputs: expected the same number of each"
            )

    @property
    def predictions(self) -> np.ndarray:
        return TASKS[self.task].predictions(self.outputs)

    def score(self) -> float:
        return TASKS[self.task].score(self.outputs, self.gold)
