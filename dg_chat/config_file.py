"""Write settings back to the config file as defaults, keeping every other line (and comment) of it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from dg_chat import paths
from dg_chat.config import ConfigError
from dg_chat.files import write_atomically

TomlValue = str | int | float | bool | None


def toml_value(value: TomlValue) -> str:
    """`value` as TOML (JSON's strings and numbers are valid TOML ones)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)


def _table_body(lines: list[str], section: str | None) -> tuple[int, int] | None:
    """Line range of the keys of `[section]` (None: the top-level keys before any table)."""
    headers = [i for i, line in enumerate(lines) if line.lstrip().startswith("[")]
    if section is None:
        return 0, headers[0] if headers else len(lines)
    for n, i in enumerate(headers):
        if re.fullmatch(rf"\[\s*{re.escape(section)}\s*\]\s*(#.*)?", lines[i].strip()):
            return i + 1, headers[n + 1] if n + 1 < len(headers) else len(lines)
    return None


def set_values(lines: list[str], section: str | None, values: Mapping[str, TomlValue]) -> list[str]:
    """`lines` of a TOML file with `key = value` set in `section` for each item (None removes the key)."""
    lines = list(lines)
    for key, value in values.items():
        body = _table_body(lines, section)
        if body is None:
            if value is None:
                continue
            lines += ["", f"[{section}]"]
            body = (len(lines), len(lines))
        start, end = body
        found = [i for i in range(start, end) if re.match(rf"\s*{re.escape(key)}\s*=", lines[i])]
        if value is None:
            lines = [line for i, line in enumerate(lines) if i not in found]
        elif found:
            lines[found[0]] = f"{key} = {toml_value(value)}"
        else:
            while end > start and not lines[end - 1].strip():
                end -= 1
            lines.insert(end, f"{key} = {toml_value(value)}")
    return lines


def save_defaults(sections: Mapping[str | None, Mapping[str, TomlValue]], path: Path | None = None) -> Path:
    """Set these keys in the config file (created if missing), atomically; returns its path."""
    path = path or paths.config_file()
    try:
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        for section, values in sections.items():
            lines = set_values(lines, section, values)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, "\n".join(lines) + "\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot save the defaults ({exc})") from None
    return path
