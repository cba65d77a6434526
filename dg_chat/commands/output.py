"""The console that commands print their results with."""

from __future__ import annotations

from rich.console import Console


class StdoutConsole(Console):
    """A rich Console on stdout whose closed pipe (`dg-chat models info F | head -1`) is not an
    error: rich's default exits with status 1; this one lets the CLI exit 141 quietly, as `ask` does."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError
