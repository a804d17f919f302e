"""A progress-bar column showing what a model's backend is waiting for that no answer shows yet (a Batch API
batch's requests done and time in its window), read from `Model.status_text` at every refresh.

    Progress(TextColumn("answer"), BarColumn(), ModelStatus(model))
"""

from __future__ import annotations

from rich.progress import ProgressColumn, Task
from rich.text import Text

from apprentice.models.base import Model


class ModelStatus(ProgressColumn):
    def __init__(self, model: Model):
        super().__init__()
        self.model = model

    def render(self, task: Task) -> Text:
        return Text(self.model.status_text().removeprefix(" · "))
