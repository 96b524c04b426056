"""How the demo tells its story: the view protocol, plain lines for logs, pipes and CI, and
the choice between those and the rich live view."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Protocol, TextIO

from rich.console import Console

from orchestrator.devtools.demo.rich_view import RichView
from orchestrator.devtools.demo.story import Event, Story


class View(Protocol):
    def info(self, text: str) -> None: ...
    def error(self, text: str) -> None: ...
    def start_story(self, story: Story) -> None: ...
    def event(self, event: Event, story: Story) -> None: ...
    def stop_story(self) -> None: ...
    def summary(self, story: Story, lines: Sequence[str]) -> None: ...


def plain_event_line(event: Event, story: Story) -> str:
    detail = f"  {event.detail}" if event.detail else ""
    return (
        f"+{event.at_ms:6.0f} ms  session {story.short(event.session)}  "
        f"{event.kind:<11}  {event.name}{detail}"
    )


class PlainView:
    """One line per event with full names, for logs, pipes and CI."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err

    def _print(self, text: str, stream: TextIO | None = None) -> None:
        target = stream or self.out
        target.write(text + "\n")
        target.flush()

    def info(self, text: str) -> None:
        self._print(text)

    def error(self, text: str) -> None:
        self._print(text, self.err)

    def start_story(self, story: Story) -> None:
        pass

    def event(self, event: Event, story: Story) -> None:
        self._print(plain_event_line(event, story))

    def stop_story(self) -> None:
        pass

    def summary(self, story: Story, lines: Sequence[str]) -> None:
        done = story.finished_count
        self._print(f"summary: {done} of {len(story.sessions)} sessions reached their final states")
        for state in story.sessions.values():
            targets = "; ".join(f"{t.name}: {t.describe()}" for t in state.targets.values())
            took = state.finished_ms
            timing = f"; {took / 1000:.2f} s" if took is not None else ""
            self._print(f"  session {state.plan.short}  {targets}{timing}")
        for line in lines:
            self._print(f"  {line}")


def make_view(out: TextIO | None = None, err: TextIO | None = None) -> View:
    """Rich live view on a terminal, plain lines otherwise."""
    console = Console(file=out or sys.stdout)
    if console.is_terminal:
        return RichView(console, Console(file=err or sys.stderr))
    return PlainView(out or sys.stdout, err or sys.stderr)
