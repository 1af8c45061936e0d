"""Takobot's prompt guard for pi: wrap over-long lines, trim an over-long prompt in the middle.

pi's TUI-oriented input handling copes badly with very long lines and very
large prompts, so Takobot never hands pi either (research/takobot-inference.md
§3.2, "Prompt guard"). takod keeps the same limits and the same behaviour:

1. CRLF and lone CR become LF;
2. every line longer than ``MAX_LINE_CHARS`` (320) is cut into pieces of at most
   320 characters, each cut at the last space that leaves the piece at least
   ``max(8, 320 // 3)`` (106) characters long, else hard at 320; the spaces at a
   cut are dropped;
3. the result is stripped;
4. if it is still longer than ``MAX_CHARS`` (80,000), the middle goes: the
   first 60 % and the last 40 % of what fits beside ``TRUNCATION_MARKER`` stay.

Pure functions, no I/O.
"""

from __future__ import annotations

import msgspec

MAX_LINE_CHARS = 320
MAX_CHARS = 80_000
TRUNCATION_MARKER = "\n[... prompt truncated for pi runtime safety ...]\n"
HEAD_SHARE = 0.6


class PreparedPrompt(msgspec.Struct, frozen=True, kw_only=True):
    """The prompt pi gets, and what the guard did to it (for status notes)."""

    text: str
    wrapped_lines: int = 0  # how many input lines were over-long and got wrapped
    trimmed_from: int | None = None  # length before the middle trim, when there was one

    def notes(self) -> list[str]:
        """Takobot's status texts for what happened."""
        out = []
        if self.wrapped_lines:
            out.append(f"pi prompt guard: wrapped {self.wrapped_lines} oversized lines")
        if self.trimmed_from is not None:
            out.append(f"pi prompt guard: trimmed prompt from {self.trimmed_from} to {len(self.text)} chars")
        return out


def wrap_line(line: str, max_chars: int = MAX_LINE_CHARS) -> list[str]:
    """``line`` in pieces of at most ``max_chars`` characters, cut at spaces where possible."""
    if max_chars <= 0 or len(line) <= max_chars:
        return [line]
    pieces: list[str] = []
    cursor = 0
    min_piece = max(8, max_chars // 3)
    while cursor < len(line):
        end = min(len(line), cursor + max_chars)
        if end >= len(line):
            pieces.append(line[cursor:])
            break
        cut = line.rfind(" ", cursor + min_piece, end + 1)
        if cut <= cursor:
            cut = end
        piece = line[cursor:cut].rstrip()
        if not piece:  # only spaces before the cut: take the hard cut instead
            piece, cut = line[cursor:end], end
        pieces.append(piece)
        cursor = cut
        while cursor < len(line) and line[cursor] == " ":
            cursor += 1
    return pieces or [line]


def trim_middle(text: str, max_chars: int = MAX_CHARS, marker: str = TRUNCATION_MARKER) -> str:
    """``text`` cut to ``max_chars`` by replacing its middle with ``marker``."""
    if max_chars <= 0:
        return ""
    if len(text) <= max_chars:
        return text
    marker_text = marker if len(marker) < max_chars else marker[: max(0, max_chars - 1)]
    if not marker_text:
        return text[:max_chars]
    room = max_chars - len(marker_text)
    head = int(room * HEAD_SHARE)
    tail = room - head
    prefix = text[:head].rstrip()
    suffix = text[-tail:].lstrip() if tail > 0 else ""
    return f"{prefix}{marker_text}{suffix}".strip()[:max_chars]


def prepare_prompt(
    prompt: str, *, max_line_chars: int = MAX_LINE_CHARS, max_chars: int = MAX_CHARS
) -> PreparedPrompt:
    """Apply the whole guard (see the module docstring) to ``prompt``."""
    text = prompt.replace("\r\n", "\n").replace("\r", "\n")
    lines: list[str] = []
    wrapped = 0
    for line in text.split("\n"):
        pieces = wrap_line(line, max_line_chars)
        wrapped += len(pieces) > 1
        lines.extend(pieces)
    normalized = "\n".join(lines).strip()
    if len(normalized) <= max_chars:
        return PreparedPrompt(text=normalized, wrapped_lines=wrapped)
    return PreparedPrompt(
        text=trim_middle(normalized, max_chars), wrapped_lines=wrapped, trimmed_from=len(normalized)
    )
