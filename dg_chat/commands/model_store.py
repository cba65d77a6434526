"""`dg-chat models list|pull|rm`: the catalog, downloads with a progress bar, removal."""

from __future__ import annotations

import argparse
import sys

from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from dg_chat import hub
from dg_chat.commands.output import StdoutConsole
from dg_chat.config import Settings
from dg_chat.engine.remote.spec import is_remote
from dg_chat.errors import DgChatError


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _catalog_name(spec: str, command: str) -> None:
    """`models pull` and `rm` take catalog names: a model on a server is none (nor a file path, which
    hub refuses)."""
    if is_remote(spec):
        raise DgChatError(f"'{spec}' is a model on a server: models {command} takes a catalog name: "
                          f"{', '.join(hub.load_catalog())}")


def _pull(spec: str, settings: Settings, console: StdoutConsole) -> int:
    _catalog_name(spec, "pull")
    plan = hub.plan_pull(spec, settings)
    console.print(Text(f"{plan.spec}: {plan.model.repo}/{plan.filename} ({hub.gb(plan.size)})"))
    if plan.reason:
        console.print(Text(f"chosen {plan.reason}"))
    columns = (TextColumn("{task.description:<8}"), BarColumn(), DownloadColumn(binary_units=False),
               TextColumn("{task.fields[speed]:>10}"), TextColumn("ETA {task.fields[eta]}"))
    with Progress(*columns, console=console, transient=False) as bar:
        tasks: dict[tuple[str, str], TaskID] = {}

        def show(p: hub.DownloadProgress) -> None:
            key = (p.filename, p.phase)  # a split model: one bar per part and phase
            if key not in tasks:
                tasks[key] = bar.add_task(p.phase, total=p.total, speed="", eta="--:--")
            bar.update(tasks[key], completed=p.done, speed=f"{p.speed / 1e6:.1f} MB/s", eta=_duration(p.eta))

        try:
            path = hub.download(plan, settings, show)
        except KeyboardInterrupt:
            bar.stop()
            console.print(Text(f"paused; run `dg-chat models pull {plan.spec}` again to resume"))
            raise
    console.print(Text(f"ready: {path}"), soft_wrap=True)
    console.print(Text(f"chat with it: dg-chat -m {plan.spec}"))
    return 0


def _list(settings: Settings, console: StdoutConsole) -> int:
    local = {m.spec: m for m in hub.local_models(settings)}
    partly = {c.spec: c for c in reversed(hub.cached_quants(settings)) if not c.complete}
    unfinished = hub.unfinished_downloads(settings)
    table = Table(title=Text(f"models (downloads: {hub.models_cache(settings)})"), title_justify="left")
    for column in ("name", "quant", "size", "downloaded"):
        # folded, never cut with "…": users copy names and paths, and a pipe gets 80 columns
        table.add_column(column, overflow="fold")
    demo = local.get(hub.DEMO)
    table.add_row(hub.DEMO, "", Text(hub.gb(demo.size) if demo else ""),
                  Text(str(demo.path)) if demo else Text(f"missing: {hub.demo_file()}", style="yellow"))
    for model in hub.load_catalog().values():
        table.add_section()
        for i, (quant, approx) in enumerate(model.quants.items()):
            spec = f"{model.name}:{quant}"
            if found := local.get(spec):
                size, where = Text(hub.gb(found.size)), Text(str(found.path), style="green")
            elif part := partly.get(spec):
                size = Text(hub.gb(part.size))
                where = Text(f"{len(part.files)} of {part.parts} parts: dg-chat models pull {spec} finishes it",
                             style="yellow")
            else:
                size, where = Text(f"~{hub.gb(approx)}"), Text("")
            table.add_row(Text(model.name if i == 0 else ""), Text(quant), size, where)
        if stopped := unfinished.get(model.name):
            table.add_row("", Text("partial"), Text(hub.gb(sum(part.size_on_disk for part in stopped))),
                          Text(f"stopped pulls: a pull resumes them, dg-chat models rm {model.name} deletes them",
                               style="yellow"))
    console.print(table)
    return 0


def _rm(spec: str, assume_yes: bool, settings: Settings, console: StdoutConsole) -> int:
    _catalog_name(spec, "rm")
    removal = hub.plan_removal(spec, settings)
    console.print(Text(f"{', '.join(removal.specs)}: frees {hub.gb(removal.freed)}"))
    for path in removal.paths:
        console.print(Text(f"  {path}"), soft_wrap=True)
    if not assume_yes:
        try:
            answer = input("delete? [y/N] ")
        except EOFError:
            print(file=sys.stderr)  # the error below starts on a line of its own, not after the question
            raise DgChatError("no answer to the confirmation; pass --yes to delete without asking") from None
        if answer.strip().lower() not in ("y", "yes"):
            console.print(Text("kept"))
            return 0
    try:
        removal.execute()
    except OSError as exc:  # a shared, read-only cache: what could go may be gone, the rest stays
        raise DgChatError(f"cannot delete {exc.filename or 'the model'}: {exc.strerror or exc}") from None
    console.print(Text(f"deleted; freed {hub.gb(removal.freed)}"))
    return 0


def run(args: argparse.Namespace) -> int:
    console = StdoutConsole(highlight=False)
    if args.models_command == "pull":
        return _pull(args.name, args.settings, console)
    if args.models_command == "rm":
        return _rm(args.name, args.yes, args.settings, console)
    return _list(args.settings, console)
