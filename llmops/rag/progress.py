"""Ingestion progress: a callback `on_progress(stage, done, total)` and, when asked, one rich display.

Stages in order: files, chunks (total 0 = not known yet), embedding batches, build, verify, publish.
"""

from __future__ import annotations

from typing import Any, Callable

ProgressFn = Callable[[str, int, int], None]


class Progress:
    """Feeds `on_progress` and, with `show`, a bar per stage on stderr.

    Off a terminal (CI logs, pipes) no bars are drawn: rich would print the last frame of every bar,
    which ends up above an error line and in logs as noise. The result line says what was done.
    """

    def __init__(self, show: bool, callback: ProgressFn | None):
        self.show, self.callback = show, callback
        self._bars = None
        self._tasks: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.show:
            if self._bars is None:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bars, TextColumn, TimeElapsedColumn

                console = Console(stderr=True)
                if not console.is_terminal:
                    self.show = False
                    if self.callback is not None:
                        self.callback(stage, done, total)
                    return
                self._bars = Bars(TextColumn("{task.description:>17}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=console)
                self._bars.start()
            if stage not in self._tasks:
                self._tasks[stage] = self._bars.add_task(stage, total=total or None)
            self._bars.update(self._tasks[stage], completed=done, total=total or None)
        if self.callback is not None:
            self.callback(stage, done, total)

    def close(self) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
