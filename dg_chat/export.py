"""Export a chat to Markdown and JSON, in a folder the user confirms (by default the data dir's
exports/, which is writable wherever dg-chat was started from)."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from datetime import datetime
from pathlib import Path

from dg_chat import paths
from dg_chat.config import SamplerSettings
from dg_chat.files import write_atomically
from dg_chat.store import Store
from dg_chat.text.markdown import literal_block, literal_inline
from dg_chat.text.sanitize import printable


def default_export_dir() -> Path:
    return paths.data_dir() / "exports"


def settings_line(sampler: SamplerSettings) -> str:
    return " · ".join(f"{f.name} {getattr(sampler, f.name)}" for f in fields(SamplerSettings))


def markdown_header(store: Store, chat_id: int, model: str, now: datetime) -> list[str]:
    """What the Markdown export says under its title: when, with which model and settings."""
    chat, settings = store.chat(chat_id), store.chat_settings(chat_id)
    created = datetime.fromtimestamp(chat.created).astimezone()
    lines = [f"*Chat started {created:%Y-%m-%d %H:%M %Z}, exported {now:%Y-%m-%d %H:%M %Z}"
             f" · model: {literal_inline(model) if model else 'none loaded'}*", "",
             f"*Settings: {settings_line(settings.sampler)}*", ""]
    if settings.system_prompt:
        lines += ["*System prompt:*", "", *literal_block(settings.system_prompt), ""]
    return lines


def export_chat(store: Store, chat_id: int, folder: Path, model: str) -> Path:
    """Write the chat as FOLDER/dg-chat-ID-SLUG.md and .json (folder created); returns the path without suffix."""
    now = datetime.now().astimezone()
    slug = re.sub(r"[^a-z0-9]+", "-", store.chat(chat_id).title.lower()).strip("-")[:40] or "chat"
    base = folder / f"dg-chat-{chat_id}-{slug}"
    title, *body = store.export_markdown(chat_id).split("\n")
    markdown = "\n".join([title, "", *markdown_header(store, chat_id, model, now), *body[1:]])
    data = {**store.export_json(chat_id), "exported": now.isoformat(), "model": model}
    folder.mkdir(parents=True, exist_ok=True)
    # answers are untrusted: the Markdown (read with cat, too) shows their controls, the JSON escapes them
    write_atomically(base.with_suffix(".md"), printable(markdown))
    write_atomically(base.with_suffix(".json"), json.dumps(data, indent=2))
    return base
