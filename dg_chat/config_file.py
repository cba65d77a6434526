"""Write settings back to the config file as defaults, keeping every other line (and comment) of it.

The file is the user's: it may use any TOML form (multi-line strings, dotted keys, inline tables),
so it is edited with tomlkit, which keeps what it does not change as it was written."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError

from dg_chat import paths
from dg_chat.config import ConfigError
from dg_chat.files import write_atomically

TomlValue = str | int | float | bool | None
Sections = Mapping[str | None, Mapping[str, TomlValue]]
"""Table name (None: the top level) -> key -> value; a value of None removes the key."""


def with_values(text: str, sections: Sections) -> str:
    """The TOML `text` with each key of `sections` set (or removed), everything else kept as written.
    Raises ConfigError (without the file's name) if `text` is not TOML or a section is not a table."""
    try:
        document = tomlkit.parse(text)
        for section, values in sections.items():
            table: Any
            if section is None:
                table = document
            elif (table := document.get(section)) is None:
                if all(value is None for value in values.values()):
                    continue
                table = document[section] = tomlkit.table()
            if not isinstance(table, MutableMapping):
                raise ConfigError(f"'{section}' is not a table")
            for key, value in values.items():
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value
        written = tomlkit.dumps(document)
        tomllib.loads(written)  # what the settings loader will read
    except (TOMLKitError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"it is not valid TOML ({exc})") from None
    return written


def save_defaults(sections: Sections, path: Path | None = None) -> Path:
    """Set these keys in the config file (created if missing), atomically; returns its path.
    Raises ConfigError, naming the file, if it cannot be read, edited or written."""
    path = path or paths.config_file()
    try:
        text = ""
        if path.exists():
            with open(path, encoding="utf-8", newline="") as file:  # its line ends (CRLF) kept as they are
                text = file.read()
        written = with_values(text, sections)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, written)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot save the defaults ({exc})") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: cannot save the defaults: {exc}") from None
    return path
