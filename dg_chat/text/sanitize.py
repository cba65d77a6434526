"""Model output (and anything read from a model file) is untrusted: make it safe to show.

A model that writes ESC [2J or an OSC 52 sequence could clear the screen or set the clipboard,
and bidirectional overrides can make text read differently from what it is. Every control
character is replaced by a visible stand-in: C0 controls by their Unicode "control pictures"
(ESC -> ␛, newline -> ␊), DEL by ␡, C1 controls (0x9b is a one-byte CSI), bidi marks and
overrides, and line/paragraph separators by U+FFFD. Show the result as plain text, never as markup.

Text from outside (a command line, stdin, the environment, a JSON request) may not even be valid
Unicode: `well_formed` makes it so before it reaches a tokenizer or the history database.
"""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")

_INVISIBLE = [0x180E, 0x200B, *range(0x2060, 0x2065), *range(0x206A, 0x2070), 0xFEFF, *range(0xFFF9, 0xFFFC),
              *range(0xE0000, 0xE0080)]
"""Format characters that show nothing yet carry text: zero-width spaces and joiners of words,
invisible operators, annotations, and tag characters (which spell hidden ASCII). ZWJ and ZWNJ
stay: emoji sequences and Persian or Indic words need them."""
_STAND_INS = {c: 0x2400 + c for c in range(0x20)} | {0x7F: 0x2421} | {
    c: 0xFFFD for c in [*range(0x80, 0xA0), 0x061C, 0x200E, 0x200F, 0x2028, 0x2029,
                        *range(0x202A, 0x202F), *range(0x2066, 0x206A), *_INVISIBLE]}
_MULTILINE = {c: s for c, s in _STAND_INS.items() if chr(c) not in "\n\t"}


def visible(text: str) -> str:
    """One-line text (a token on the canvas, a title, a value from a file): every control shown."""
    return text.translate(_STAND_INS)


def printable(text: str) -> str:
    """Multi-line text (an answer): like `visible`, but newlines and tabs are kept."""
    return text.replace("\r\n", "\n").translate(_MULTILINE)


def well_formed(text: str) -> str:
    """text with every lone surrogate replaced by U+FFFD: the undecodable bytes that Python keeps
    from argv, stdin and the environment (surrogateescape), or a JSON "\\udcff" escape. Neither
    a tokenizer nor SQLite accepts them."""
    return _SURROGATE.sub("\ufffd", text)
