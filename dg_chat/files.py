"""Writing the app's small files (config, first-run choice, exports) so that none is ever half written."""

from __future__ import annotations

import os
import stat
import tempfile
from contextlib import suppress
from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` so that a reader, a crash, Ctrl-C or a full disk leaves the
    old file or the new one, never part of one: a temporary file beside it (uniquely named: two
    instances may save at once), flushed to disk, then renamed over it. The file keeps its mode
    (a new one gets 0644). Raises OSError."""
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as file:  # `text`'s line ends, as they are
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(temporary)
        raise
