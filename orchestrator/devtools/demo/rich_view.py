"""The rich live view of the demo, for a terminal: events scroll above a table of where each
session stands."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from orchestrator.devtools.demo.story import FACT_PREFIX, KINDS, TARGETS, Event, Story

_KIND_STYLES = {
    "command": "bold blue",
    "fact": "bold green",
    "task": "magenta",
    "result": "cyan",
    "dead letter": "bold red",
}
_VERB_STYLES = {
    "Confirmed": "bold green",
    "Failed": "bold red",
    "RegenerationRequested": "bold yellow",
    "Proposed": "green",
}


class RichView:
    """A live terminal view: events scroll above a table of the sessions' states."""

    def __init__(self, console: Console, err_console: Console) -> None:
        self.console = console
        self.err_console = err_console
        self._live: Live | None = None
        self._story: Story | None = None

    def info(self, text: str) -> None:
        self.console.print(Text.assemble(("• ", "bold cyan"), text))

    def error(self, text: str) -> None:
        self.err_console.print(Text(text, style="bold red"))

    def start_story(self, story: Story) -> None:
        self._story = story
        self._live = Live(
            console=self.console,
            refresh_per_second=8,
            transient=True,
            get_renderable=self._render,
        )
        self._live.start()

    def stop_story(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    def event(self, event: Event, story: Story) -> None:
        line = Text()
        line.append(f"+{event.at_ms:6.0f} ms  ", style="dim")
        line.append(story.short(event.session), style="bold")
        line.append("  ")
        line.append(f"{event.kind:<11}", style=_KIND_STYLES.get(event.kind, ""))
        line.append("  ")
        if event.kind == "fact" and event.name.startswith(FACT_PREFIX):
            action = event.name.removeprefix(FACT_PREFIX)
            verb = action.rpartition(".")[2]
            line.append(FACT_PREFIX, style="dim")
            line.append(action, style=_VERB_STYLES.get(verb, "bold"))
        else:
            line.append(event.name)
        if event.detail:
            line.append(f"  {event.detail}", style="dim")
        self.console.print(line)

    def _render(self) -> RenderableType:
        story = self._story
        if story is None:
            return Text("")
        table = self._table(story)
        spinner = Spinner(
            "dots",
            text=Text(
                f"{story.finished_count}/{len(story.sessions)} sessions finished, "
                f"{story.elapsed_ms() / 1000:.1f} s",
                style="bold",
            ),
        )
        return Group(table, spinner)

    def _table(self, story: Story) -> Table:
        table = Table(show_edge=False, header_style="bold")
        table.add_column("session")
        for name in TARGETS:
            table.add_column(name)
        for kind in KINDS:
            table.add_column(kind + "s", justify="right")
        table.add_column("time", justify="right")
        for state in story.sessions.values():
            cells: list[RenderableType] = [state.plan.short]
            for target in state.targets.values():
                label = target.state + (f" ({target.attempts})" if target.attempts else "")
                style = _VERB_STYLES.get(target.state, "")
                cells.append(Text(label, style=style))
            cells.extend(str(state.counts[kind]) for kind in KINDS)
            took = state.finished_ms
            cells.append(f"{took / 1000:.2f} s" if took is not None else "…")
            table.add_row(*cells)
        return table

    def summary(self, story: Story, lines: Sequence[str]) -> None:
        done = story.finished_count
        total = len(story.sessions)
        style = "bold green" if done == total else "bold red"
        self.console.print()
        self.console.print(
            Text(f"Summary: {done} of {total} sessions reached their final states", style=style)
        )
        table = Table(show_edge=False, header_style="bold")
        table.add_column("session")
        for name in TARGETS:
            table.add_column(name)
        table.add_column("time", justify="right")
        for state in story.sessions.values():
            cells: list[RenderableType] = [state.plan.short]
            for target in state.targets.values():
                cells.append(
                    Text(target.describe(), style=_VERB_STYLES.get(target.state, "yellow"))
                )
            took = state.finished_ms
            cells.append(f"{took / 1000:.2f} s" if took is not None else "-")
            table.add_row(*cells)
        self.console.print(table)
        for line in lines:
            self.console.print(f"  {escape(line)}")
