"""Model output is untrusted: make it safe to print on a terminal."""

from __future__ import annotations

import re

# CSI/OSC/other escape sequences, then any remaining C0/C1 control character except \t and \n.
_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` without escape sequences or control characters (newlines and tabs kept)."""
    return _ESCAPES.sub("", text.replace("\r\n", "\n"))
