"""Conversation history in SQLite: chats, messages, per-chat settings, stats and replay frames.

Written so that nothing is lost when the process dies: the connection is in autocommit mode
with WAL journaling, so every call below is durable once it returns (a killed process keeps
it; only a power cut may lose the last WAL frames, as synchronous=NORMAL allows). The TUI
stores the user message before generation starts and rewrites the model message at every
committed block.

One Store may be used from several threads (the UI and the engine worker): calls are
serialised by a lock. The schema evolves through MIGRATIONS, tracked by PRAGMA user_version.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from dg_chat import paths
from dg_chat.config import Settings, saved_settings, settings_to_dict
from dg_chat.engine.events import EMPTY_ANSWER
from dg_chat.engine.model_info import ModelInfo
from dg_chat.errors import DgChatError
from dg_chat.text.markdown import literal_block, literal_inline

Status = Literal["complete", "partial", "stopped", "failed"]
"""complete: finished normally; partial: being generated, or interrupted by a crash;
stopped: cancelled by the user; failed: the engine reported an error."""
STATUSES: tuple[Status, ...] = get_args(Status)
INCOMPLETE: frozenset[Status] = frozenset(STATUSES) - {"complete"}
"""The statuses of an answer that did not finish normally."""


def finished_status(stopped: bool) -> Status:
    """The status of an answer whose turn finished: cut short by the user, or complete."""
    return "stopped" if stopped else "complete"


class StoreError(DgChatError):
    """The history database cannot be opened or used."""


_BUSY, _LOCKED, _READONLY, _CORRUPT, _NOT_A_DATABASE = 5, 6, 8, 11, 26  # SQLite's primary result codes
REPAIR_HINT = "move it away or run `dg-chat doctor --repair-history`"


def damaged(path: Path, reason: str) -> StoreError:
    return StoreError(f"the history {path} is damaged ({reason}); {REPAIR_HINT}")


def unusable(path: Path, exc: sqlite3.Error) -> StoreError:
    """A history that cannot be used now, with nothing wrong in it: locked, read-only, ..."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    in_use = "; another program (another dg-chat?) is using it: close that and try again"
    hint = {_BUSY: in_use, _LOCKED: in_use, _READONLY: "; make the file and its folder writable"}.get(code, "")
    return StoreError(f"cannot use the history database {path}: {exc}{hint}")


def _is_damage(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (_CORRUPT, _NOT_A_DATABASE)


def integrity_problems(db: sqlite3.Connection, *, quick: bool = False, limit: int = 5) -> list[str]:
    """What SQLite's integrity check finds wrong ([] when the database is sound). Raises the
    sqlite3.Error of a check that cannot run for another reason (locked, say): that is no damage."""
    pragma = "quick_check" if quick else "integrity_check"
    try:
        rows = db.execute(f"PRAGMA {pragma}({limit})").fetchall()
    except sqlite3.DatabaseError as exc:
        if not _is_damage(exc):
            raise
        return [str(exc)]
    problems = [" ".join(str(row[0]).replace("*** in database main ***", "").split()) for row in rows]
    return [] if problems == ["ok"] else [problem for problem in problems if problem]


MIGRATIONS: list[str] = [
    # 1: the initial schema. A migration is history, written out once: its status CHECK spells out
    # STATUSES (test_store checks they agree); a new status needs a migration of its own.
    """
    CREATE TABLE chats (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        settings TEXT NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'model')),
        content TEXT NOT NULL,
        thinking TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL CHECK (status IN ('complete', 'partial', 'stopped', 'failed')),
        error TEXT NOT NULL DEFAULT '',
        stats TEXT,
        created REAL NOT NULL
    );
    CREATE INDEX messages_by_chat ON messages(chat_id, id);
    CREATE TABLE frames (
        message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        block INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (message_id, block)
    );
    """,
    # 2: the model that wrote each answer (JSON of ModelInfo; NULL for answers saved before), and the
    # earlier versions of a regenerated answer, kept but superseded (left out of the chat and its context)
    """
    ALTER TABLE messages ADD COLUMN model TEXT;
    ALTER TABLE messages ADD COLUMN superseded INTEGER NOT NULL DEFAULT 0;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True, slots=True)
class ChatSummary:
    id: int
    title: str
    created: float
    updated: float


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    chat_id: int
    role: str
    content: str
    thinking: str
    status: Status
    error: str
    stats: dict[str, Any] | None
    model: ModelInfo | None = None
    """The model that wrote this answer; None for user messages and answers saved before it was recorded."""
    superseded: bool = False
    """An earlier version of a regenerated answer (the consecutive answers after one message are its versions)."""


def _json_object(text: str | None) -> dict[str, Any] | None:
    """A stored JSON object; None if there is none, or it is damaged (the message itself stays readable)."""
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def title_from(text: str, limit: int = 48) -> str:
    """A chat title from its first user message: the first line, shortened."""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "") or "New chat"
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


class Store:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths.history_db()
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the history database {self.path}: {exc}") from None
        try:
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            problems = integrity_problems(self._db, quick=True, limit=1)
            if problems:  # found now, not as a failure in the middle of a chat
                raise damaged(self.path, problems[0])
            self._migrate()
        except sqlite3.Error as exc:
            self._db.close()
            raise self._error(exc) from None
        except StoreError:
            self._db.close()
            raise

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"the history database {self.path} was written by a newer dg-chat "
                             f"(schema {version}, this one knows {SCHEMA_VERSION})")
        for number in range(version, SCHEMA_VERSION):
            # executescript commits first; BEGIN makes each migration all-or-nothing.
            self._db.executescript(f"BEGIN; {MIGRATIONS[number]}; PRAGMA user_version = {number + 1}; COMMIT;")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    def _write(self, *statements: tuple[str, tuple]) -> int:
        """Run statements as one transaction; returns the last inserted row id."""
        with self._lock:
            try:
                with self._db:  # BEGIN ... COMMIT, or ROLLBACK on error
                    self._db.execute("BEGIN")
                    for sql, params in statements:
                        cursor = self._db.execute(sql, params)
                return int(cursor.lastrowid or 0)
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    def _error(self, exc: sqlite3.Error) -> StoreError:
        return damaged(self.path, str(exc)) if _is_damage(exc) else unusable(self.path, exc)

    # chats

    def create_chat(self, title: str, settings: Settings) -> int:
        now = time.time()
        return self._write(("INSERT INTO chats (title, created, updated, settings) VALUES (?, ?, ?, ?)",
                            (title, now, now, json.dumps(settings_to_dict(settings)))))

    def chats(self, search: str = "") -> list[ChatSummary]:
        """All chats, most recently used first; `search` keeps those whose title or any
        message contains it (case-insensitive for ASCII letters)."""
        sql = "SELECT id, title, created, updated FROM chats"
        params: tuple = ()
        if search:
            pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            sql += (" WHERE title LIKE ?1 ESCAPE '\\' OR id IN (SELECT chat_id FROM messages"
                    " WHERE content LIKE ?1 ESCAPE '\\' OR thinking LIKE ?1 ESCAPE '\\')")
            params = (pattern,)
        return [ChatSummary(**dict(row)) for row in self._query(sql + " ORDER BY updated DESC, id DESC", params)]

    def chat(self, chat_id: int) -> ChatSummary:
        rows = self._query("SELECT id, title, created, updated FROM chats WHERE id = ?", (chat_id,))
        if not rows:
            raise StoreError(f"no chat with id {chat_id}")
        return ChatSummary(**dict(rows[0]))

    def last_chat_id(self) -> int | None:
        rows = self._query("SELECT id FROM chats ORDER BY updated DESC, id DESC LIMIT 1")
        return int(rows[0][0]) if rows else None

    def rename_chat(self, chat_id: int, title: str) -> None:
        self._write(("UPDATE chats SET title = ? WHERE id = ?", (title, chat_id)))

    def delete_chat(self, chat_id: int) -> None:
        self._write(("DELETE FROM chats WHERE id = ?", (chat_id,)))

    def chat_settings(self, chat_id: int) -> Settings:
        rows = self._query("SELECT settings FROM chats WHERE id = ?", (chat_id,))
        if not rows:
            raise StoreError(f"no chat with id {chat_id}")
        try:
            data = json.loads(rows[0][0])
        except ValueError:
            return Settings()  # damaged: the defaults are safe
        return saved_settings(data) if isinstance(data, dict) else Settings()

    def set_chat_settings(self, chat_id: int, settings: Settings) -> None:
        self._write(("UPDATE chats SET settings = ? WHERE id = ?", (json.dumps(settings_to_dict(settings)), chat_id)))

    # messages

    def add_message(self, chat_id: int, role: str, content: str, *, thinking: str = "",
                    status: Status = "complete", model: ModelInfo | None = None) -> int:
        return self._write(*self._adding(chat_id, role, content, thinking=thinking, status=status, model=model))

    @staticmethod
    def _adding(chat_id: int, role: str, content: str, *, thinking: str = "", status: Status = "complete",
                model: ModelInfo | None = None) -> tuple[tuple[str, tuple], ...]:
        """The statements that add a message to a chat, the insert last (its id is the row id)."""
        now = time.time()
        model_json = None if model is None else json.dumps(model.to_dict())
        return (
            ("UPDATE chats SET updated = ? WHERE id = ?", (now, chat_id)),
            ("INSERT INTO messages (chat_id, role, content, thinking, status, created, model)"
             " VALUES (?, ?, ?, ?, ?, ?, ?)", (chat_id, role, content, thinking, status, now, model_json)),
        )

    def update_message(self, message_id: int, *, content: str, thinking: str, status: Status,
                       error: str = "", stats: dict[str, Any] | None = None) -> None:
        self._write(("UPDATE messages SET content = ?, thinking = ?, status = ?, error = ?, stats = ? WHERE id = ?",
                     (content, thinking, status, error, None if stats is None else json.dumps(stats), message_id)))

    def messages(self, chat_id: int, *, superseded: bool = False) -> list[StoredMessage]:
        """The chat's messages in order: the version of each answer chosen now (with `superseded`: all)."""
        rows = self._query("SELECT id, chat_id, role, content, thinking, status, error, stats, model, superseded"
                           " FROM messages WHERE chat_id = ? AND (? OR NOT superseded) ORDER BY id",
                           (chat_id, superseded))
        return [StoredMessage(**{**dict(row), "stats": _json_object(row["stats"]),
                                 "model": ModelInfo.from_dict(_json_object(row["model"])),
                                 "superseded": bool(row["superseded"])})
                for row in rows]

    def versions(self, message_id: int) -> list[StoredMessage]:
        """Every version of the answer `message_id` (the run of answers it is in), oldest first."""
        rows = self._query("SELECT chat_id FROM messages WHERE id = ?", (message_id,))
        if not rows:
            raise StoreError(f"no message with id {message_id}")
        return next(run for run in self._runs(rows[0][0]) if any(m.id == message_id for m in run))

    def version_numbers(self, chat_id: int) -> dict[int, tuple[int, int]]:
        """(which, of how many) for the chosen version of each answer of the chat, by message id."""
        return {message.id: (number, len(run)) for run in self._runs(chat_id)
                for number, message in enumerate(run, 1) if not message.superseded}

    def _runs(self, chat_id: int) -> list[list[StoredMessage]]:
        """The chat's messages, all versions, with consecutive answers (the versions of one) together."""
        runs: list[list[StoredMessage]] = []
        for message in self.messages(chat_id, superseded=True):
            if message.role == "model" and runs and runs[-1][-1].role == "model":
                runs[-1].append(message)
            else:
                runs.append([message])
        return runs

    def supersede(self, message_id: int) -> None:
        """Keep an answer as an earlier version (regenerate): out of the chat and its context."""
        self._write(("UPDATE messages SET superseded = 1 WHERE id = ?", (message_id,)))

    def choose_version(self, message_id: int) -> None:
        """Make this version of its answer the one in the chat; the others become earlier versions."""
        ids = [m.id for m in self.versions(message_id)]
        marks = ", ".join("?" * len(ids))
        self._write((f"UPDATE messages SET superseded = (id != ?) WHERE id IN ({marks})", (message_id, *ids)))

    def recent_prompts(self, limit: int = 200) -> list[str]:
        """The user's last `limit` messages over all chats, oldest first (the prompt's history)."""
        rows = self._query("SELECT content FROM messages WHERE role = 'user' ORDER BY id DESC LIMIT ?", (limit,))
        return [row[0] for row in reversed(rows)]

    def resend(self, message_id: int, content: str) -> int:
        """Replace a user message and every later message of its chat by a new user message
        `content` (edit and resend), in one transaction: if it cannot be stored, the old exchange
        stays. Returns the new message's id; StoreError if there is no such message."""
        rows = self._query("SELECT chat_id FROM messages WHERE id = ?", (message_id,))
        if not rows:
            raise StoreError(f"no message with id {message_id}")
        chat_id = int(rows[0][0])
        return self._write(("DELETE FROM messages WHERE chat_id = ? AND id >= ?", (chat_id, message_id)),
                           *self._adding(chat_id, "user", content))

    # replay frames

    def save_frames(self, message_id: int, block: int, data: bytes) -> None:
        self._write(("INSERT OR REPLACE INTO frames (message_id, block, data) VALUES (?, ?, ?)",
                     (message_id, block, data)))

    def frames(self, message_id: int) -> list[bytes]:
        """The recorded blocks of a model message, in block order."""
        rows = self._query("SELECT data FROM frames WHERE message_id = ? ORDER BY block", (message_id,))
        return [bytes(row[0]) for row in rows]

    # export

    def export_json(self, chat_id: int) -> dict[str, Any]:
        chat = self.chat(chat_id)
        return {
            "title": chat.title,
            "created": chat.created,
            "updated": chat.updated,
            "settings": settings_to_dict(self.chat_settings(chat_id)),
            "messages": [{"role": m.role, "content": m.content, "thinking": m.thinking, "status": m.status,
                          "error": m.error, "stats": m.stats, "model": m.model and m.model.to_dict()}
                         for m in self.messages(chat_id)],
        }

    def export_markdown(self, chat_id: int) -> str:
        """The chat as Markdown: a heading per message, its text in a fenced block (answers are
        untrusted: nothing in them may pass for a heading, HTML or a link)."""
        chat = self.chat(chat_id)
        parts = [f"# {literal_inline(chat.title)}", ""]
        for message in self.messages(chat_id):
            heading = {"user": "You", "model": "Model", "system": "System"}[message.role]
            if message.model is not None:
                heading += f" · {message.model.label()}"
            if message.status != "complete":
                heading += f" ({message.status}{': ' + message.error if message.error else ''})"
            parts += [f"## {literal_inline(heading)}", ""]
            if message.thinking:
                parts += ["<details><summary>Thinking</summary>", "", *literal_block(message.thinking), "",
                          "</details>", ""]
            empty = message.role == "model" and message.status == "complete" and not message.content
            parts += [f"*{EMPTY_ANSWER}*"] if empty else literal_block(message.content)
            parts.append("")
        return "\n".join(parts)


# -- health and repair --------------------------------------------------------------------

_TABLES = ("chats", "messages", "frames")
"""In the order a repair copies them: parents before children."""
_MAX_SKIP = 100_000
"""Unreadable row ids a repair steps over, past the last readable one, when the highest id is unknown."""


def history_problems(path: Path) -> list[str]:
    """`PRAGMA integrity_check` of the history at `path` ([] when sound or not created yet). Raises
    StoreError when it cannot be checked (locked, unreadable): that says nothing of damage."""
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(path)
        try:
            return integrity_problems(db)
        finally:
            db.close()
    except sqlite3.Error as exc:
        if _is_damage(exc):
            return [str(exc)]
        raise unusable(path, exc) from None


@dataclass(frozen=True)
class Repair:
    backup: Path
    """Where the damaged file now is (kept, untouched)."""
    kept: dict[str, int]
    """Rows copied into the new history, per table."""
    damaged_tables: tuple[str, ...]
    """Tables with rows SQLite could not read (or that no longer fit the schema)."""


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def _readable_rows(db: sqlite3.Connection, table: str, columns: str) -> tuple[list[tuple], bool]:
    """Every row of `table` that SQLite can still read, in rowid order, stepping over damaged
    pages one rowid at a time; and whether anything was unreadable."""
    lost = False
    try:
        top = db.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0
    except sqlite3.DatabaseError:
        top, lost = None, True
    rows: list[tuple] = []
    after, last_read = -(2 ** 63), 0
    while True:
        try:
            for rowid, *row in db.execute(f"SELECT rowid, {columns} FROM {table} WHERE rowid > ? "
                                          "ORDER BY rowid", (after,)):
                rows.append(tuple(row))
                after = last_read = rowid
            return rows, lost
        except sqlite3.DatabaseError:
            lost = True
            after = max(after, 0) + 1
            if after > (top if top is not None else last_read + _MAX_SKIP):
                return rows, lost


def _move_aside(path: Path) -> Path:
    """Move the database (and its -wal/-shm files) to a dated backup name; return it."""
    backup = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            try:
                source.rename(f"{backup}{suffix}")
            except OSError as exc:
                raise StoreError(f"cannot move the damaged history aside: {exc.strerror}: {source}") from None
    return backup


def repair_history(path: Path | None = None) -> Repair:
    """Keep what SQLite can still read: the damaged file moves to a backup, and its readable rows
    go into a fresh history at `path` (rows whose chat or message was lost are left out)."""
    path = path or paths.history_db()
    if not path.exists():
        raise StoreError(f"there is no history at {path} to repair")
    backup = _move_aside(path)
    kept: dict[str, int] = {}
    damaged_tables: list[str] = []
    try:
        source = sqlite3.connect(backup)  # read only: nothing is written to it
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the damaged history {backup}: {exc}") from None
    fresh = Store(path)
    try:
        for table in _TABLES:
            # every column the damaged file has (an older schema has fewer), in the fresh one's names
            try:
                present = set(_columns(source, table))
            except sqlite3.DatabaseError:
                present = set()
            columns = ", ".join(c for c in _columns(fresh._db, table) if c in present)
            rows, lost = _readable_rows(source, table, columns) if columns else ([], True)
            kept[table] = _insert_rows(fresh, table, columns, rows)
            if lost or kept[table] < len(rows):
                damaged_tables.append(table)
    finally:
        source.close()
        fresh.close()
    return Repair(backup, kept, tuple(damaged_tables))


def _insert_rows(store: Store, table: str, columns: str, rows: list[tuple]) -> int:
    """Insert each row on its own; a row that no longer fits (damaged values, lost parent) is left out."""
    sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(rows[0]))})" if rows else ""
    inserted = 0
    with store._db:  # one transaction; a failing row only undoes its own statement
        store._db.execute("BEGIN")
        for row in rows:
            try:
                store._db.execute(sql, row)
                inserted += 1
            except sqlite3.Error:
                continue
    return inserted
