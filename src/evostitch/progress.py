"""Progress bars (rich) that can be switched off for tests and scripts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class _Silent:
    def update(self, **_: object) -> None:
        pass


class _Bar:
    def __init__(self, progress: Progress, task: int) -> None:
        self.progress, self.task = progress, task

    def update(self, **kwargs: object) -> None:
        self.progress.update(self.task, **kwargs)


@contextmanager
def progress_bar(description: str, total: float | None, enabled: bool = True) -> Iterator:
    """A single rich progress bar; `bar.update(advance=..., description=...)`."""
    if not enabled:
        yield _Silent()
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    ) as progress:
        yield _Bar(progress, progress.add_task(description, total=total))
