"""Command-line entry point: `dg-chat` (the chat TUI), `ask`, `models`, `doctor`, `serve`.

Each command lives in `dg_chat/commands/<name>.py` as `run(args) -> int` and is imported
only when used, so `dg-chat --help` stays instant. Errors reach the user as one line.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import io
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

from dg_chat import __version__, paths
from dg_chat.config import BACKENDS, KERNELS, LEAVES, load_settings
from dg_chat.errors import DgChatError, DgChatWarning
from dg_chat.text.sanitize import visible

EXIT_ERROR, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 1, 130, 141


def _settings_flags(parser: argparse.ArgumentParser, default: Any = None, sampling: bool = True) -> None:
    """Flags that override settings; dest names are the settings' field names. Sub-commands
    pass default=SUPPRESS so that flags given before the command name are not reset; a command
    that answers nothing (doctor) takes the model's flags only (sampling=False)."""
    g = parser.add_argument_group(f"model{' and sampling' if sampling else ''} (override the config file)")
    add = lambda *names, **kw: g.add_argument(*names, default=default, **kw)  # noqa: E731
    add("--model", "-m", metavar="NAME|PATH|URL", help="catalog name (demo, diffusiongemma:Q4_K_M), GGUF path, "
                                                       "or a server's model: openai:BASE-URL#MODEL")
    add("--demo", action="store_true", help="use the embedded demo model")
    add("--backend", choices=BACKENDS, help="engine to run the model on (default: auto)")
    add("--device", metavar="DEV", help="auto, cpu, cuda or cuda:N (default: auto)")
    add("--kernels", choices=KERNELS, help="PyTorch engine: triton (GGUF blocks as stored; CUDA) or reference "
                                           "(plain torch); default: auto, triton on CUDA")
    if not sampling:
        return
    add("--seed", type=int, metavar="N", help="random seed, for reproducible answers")
    add("--steps", dest="max_steps", type=int, metavar="N", help="most denoising steps per block (default 48)")
    add("--max-canvases", type=int, metavar="N", help="most blocks per answer")
    add("--think", dest="thinking", action="store_true", help="let the model think first")
    add("--no-think", dest="thinking", action="store_false", help="answer directly (default)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dg-chat",
        description="Chat with block-diffusion language models (DiffusionGemma) in your terminal, offline.",
        epilog=f"config file: {paths.config_file()}",
    )
    parser.add_argument("--version", action="version", version=f"dg-chat {__version__}")
    _settings_flags(parser)
    parser.add_argument("--continue", dest="continue_chat", action="store_true", help="reopen the last chat")
    parser.set_defaults(command="chat")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    ask = sub.add_parser("ask", help="answer one prompt and exit (pipe-friendly)",
                         description="Answer one prompt and print the answer. The prompt is read from stdin "
                                     "when not given.")
    ask.add_argument("prompt", nargs="?", help="the prompt (default or '-': read stdin)")
    ask.add_argument("--json", action="store_true", help="print one JSON object with text, tokens and stats")
    ask.add_argument("--show-steps", action="store_true", help="redraw the live canvas in place on stderr")
    ask.add_argument("--system", metavar="TEXT", dest="system_prompt", help="system prompt")
    _settings_flags(ask, default=argparse.SUPPRESS)
    ask.set_defaults(command="ask")

    models = sub.add_parser("models", help="list, download, remove and inspect models",
                            description="Manage models: the catalog, downloads and local GGUF files.")
    models.set_defaults(command="models", models_command=None)
    msub = models.add_subparsers(title="models commands", metavar="ACTION")
    mlist = msub.add_parser("list", help="catalog entries and local files with sizes")
    mlist.set_defaults(models_command="list")
    pull = msub.add_parser("pull", help="download a model (NAME[:QUANT])")
    pull.add_argument("name", metavar="NAME[:QUANT]")
    pull.set_defaults(models_command="pull")
    rm = msub.add_parser("rm", help="delete a downloaded model (NAME alone: also its stopped pulls' partial files)")
    rm.add_argument("name", metavar="NAME[:QUANT]")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    rm.set_defaults(models_command="rm")
    info = msub.add_parser("info", help="architecture, size, quantisation and backend of a model")
    info.add_argument("name", metavar="NAME|PATH")
    info.set_defaults(models_command="info")

    doctor = sub.add_parser("doctor", help="check Python, GPU, backends, models and paths",
                            description="Check this machine and installation; one line per check with a hint.")
    doctor.add_argument("--repair-history", action="store_true",
                        help="copy what SQLite can still read of a damaged chat history into a fresh one "
                             "(the damaged file is kept beside it)")
    _settings_flags(doctor, default=argparse.SUPPRESS, sampling=False)
    doctor.set_defaults(command="doctor")

    serve = sub.add_parser("serve", help="serve the model to other apps (OpenAI-compatible HTTP API)",
                           description="Serve the model over an OpenAI-compatible API (/v1/models, "
                                       "/v1/chat/completions, streamed or whole; the live canvas as an opt-in "
                                       "extension). Requests queue on the one engine. The model and sampling flags "
                                       "set the defaults of every request.")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1, this machine only; there, without a token, "
                            "only requests for localhost are answered, so that no web page can use the model)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080; 0: a free one)")
    serve.add_argument("--token-env", metavar="NAME",
                       help="environment variable holding a bearer token that every request must send")
    _settings_flags(serve, default=argparse.SUPPRESS)
    serve.set_defaults(command="serve")
    return parser


def settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings fields given on the command line (None = not given): the options whose dest is a
    setting's name (see `_settings_flags`)."""
    overrides = {name: getattr(args, name, None) for name in LEAVES}
    if getattr(args, "demo", False):
        overrides["model"] = "demo"
    return overrides


def _crash_log(text: str) -> str:
    """Write a traceback to a file in the cache dir; return the file's path."""
    try:
        log_dir = paths.cache_dir() / "crashes"
        log_dir.mkdir(parents=True, exist_ok=True)
        path = log_dir / f"{datetime.now():%Y%m%d-%H%M%S-%f}.log"
        path.write_text(text, encoding="utf-8")
        return str(path)
    except OSError:
        return "(could not be written)"


class _CrashLogHandler(logging.Handler):
    """The errors dg-chat logs with their traceback (a turn that failed inside the engine, which
    the user sees as one line) go to a crash log, not to the terminal."""

    def __init__(self, announce: bool) -> None:
        super().__init__(logging.ERROR)
        self.announce = announce
        """Also say on stderr, in one line, where each crash log is."""
        self.path: str | None = None
        """The crash log of the last error logged."""

    def emit(self, record: logging.LogRecord) -> None:
        self.path = _crash_log(self.format(record))
        if self.announce:
            print(f"dg-chat: {visible(record.getMessage())} (traceback in {self.path})", file=sys.stderr)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """DgChatWarnings as one line on stderr, like the errors; other warnings as Python shows them."""
    if issubclass(category, DgChatWarning):
        print(f"dg-chat: warning: {visible(str(message))}", file=sys.stderr)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def main(argv: Sequence[str] | None = None) -> int:
    warnings.showwarning = _show_warning
    if sys.stderr is None:  # closed (`2>&-`): print() would send its messages to stdout, into the answer
        sys.stderr = open(os.devnull, "w")  # for the life of the process
    if sys.stdout is None:  # started with stdout closed (`>&-`): what a command prints would be lost unsaid
        print("dg-chat: error: standard output is closed; nothing could be shown or saved", file=sys.stderr)
        return 1
    for stream in (sys.stdout, sys.stderr):  # a terminal that is not UTF-8 (LANG=C): "?" for what it lacks
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="replace")
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # as parse_args says it, and what the usage above it does not: how to ask in several words
        words = args.command == "ask" and not any(item.startswith("-") for item in unknown)
        parser.error(f"unrecognized arguments: {' '.join(unknown)}"
                     + ('; quote a prompt of several words: dg-chat ask "why is the sky blue"' if words else ""))
    if args.continue_chat and args.command != "chat":
        parser.error(f"--continue reopens the last chat in the app; it does nothing for '{args.command}'")
    if getattr(args, "demo", False) and getattr(args, "model", None) not in (None, "demo"):
        parser.error(f"--demo and --model {args.model} name two models; give one of them")
    # a server's console tells of each failed turn (its client gets the one-line error)
    crash_log, logger = _CrashLogHandler(announce=args.command == "serve"), logging.getLogger("dg_chat")
    logger.addHandler(crash_log)
    try:
        return _run(parser, args, crash_log)
    finally:
        logger.removeHandler(crash_log)


_MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})
"""Write errors of a full disk (`ask ... > /dev/full`), a read-only one or a failing device."""


def _quiet_stdout() -> None:
    """Send what stdout still holds to /dev/null if it cannot take it, so that Python's flush at
    exit does not report the same error again."""
    try:
        sys.stdout.flush()
    except OSError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, crash_log: _CrashLogHandler) -> int:
    try:
        if args.command == "models" and args.models_command is None:
            parser.parse_args(["models", "--help"])
        try:
            args.settings = load_settings(settings_overrides(args))
        except DgChatError as exc:
            if args.command != "doctor":
                raise
            args.settings, args.settings_error = None, exc  # doctor reports it among its other checks
        module = importlib.import_module(f"dg_chat.commands.{args.command}")
        return module.run(args)
    except DgChatError as exc:
        where = f" (traceback in {crash_log.path})" if crash_log.path else ""
        print(f"dg-chat: error: {visible(str(exc))}{where}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("dg-chat: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (dg-chat ask ... | head): nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as exc:  # the last line of defence: one line, traceback to a file
        if os.environ.get("DG_CHAT_DEBUG"):
            raise
        if isinstance(exc, OSError) and exc.errno in _MACHINE_ERRNOS:  # the machine's trouble, not a bug
            where = f" ({exc.filename})" if exc.filename else ""
            print(f"dg-chat: error: {exc.strerror}{visible(where)}", file=sys.stderr)
            _quiet_stdout()
            return EXIT_ERROR
        path = _crash_log("".join(traceback.format_exception(exc)))
        print(f"dg-chat: internal error: {type(exc).__name__}: {visible(str(exc))} (traceback in {path})",
              file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
