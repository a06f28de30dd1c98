"""Showing untrusted text (model output, data rows, names from files) in terminals and reports."""

from __future__ import annotations

import re
import reprlib
from typing import Any

from rich.markup import escape

# C0/C1 controls except tab and newline (ESC can drive a terminal, CR overwrites a line) and the
# bidirectional overrides that make text read differently from what it is.
CONTROL_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
SHORT_REPR = reprlib.Repr()
SHORT_REPR.maxstring = SHORT_REPR.maxother = 60


def visible(text: str) -> str:
    """`text` with control characters written out as `\\xNN`/`\\uNNNN` escapes."""
    return CONTROL_CHARS.sub(lambda m: ascii(m.group())[1:-1], text)


def console_text(text: str) -> str:
    """`text` for rich's `print` and tables: control characters visible, `[...]` shown literally."""
    return escape(visible(text))


def quoted(value: Any) -> str:
    """A value quoted in a one-line message: its repr, bounded in length and nesting."""
    return SHORT_REPR.repr(value)
