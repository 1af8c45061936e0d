"""Server-sent events, parsed incrementally as the WHATWG HTML standard says.

The event-stream interpretation rules (HTML § 9.2.6), exactly:

- lines end in CRLF, a lone LF or a lone CR; a U+FEFF at the very start of the
  stream is dropped;
- an empty line dispatches the event being built, unless its data buffer is
  empty (then the event type is reset and nothing is dispatched);
- a line starting with ``:`` is a comment;
- ``field:value`` (one leading space of the value dropped) or a bare ``field``
  (empty value); fields ``event``, ``data`` (appended, lines joined with LF),
  ``id`` (ignored if it contains NUL; persists across events) and ``retry``
  (ASCII digits only); any other field is ignored;
- at the end of the stream an event not yet terminated by an empty line is
  discarded.

:class:`SSEParser` keeps its state between calls, so a stream can be fed in
chunks of any size (:meth:`SSEParser.feed`), or as lines already split by an
HTTP client (:meth:`SSEParser.feed_line`, what ``httpx``'s ``aiter_lines()``
gives). Both give the same events for the same stream.
"""

from __future__ import annotations

import re

import msgspec

_EOL = re.compile(r"\r\n|\r|\n")
_BOM = "\ufeff"


class SSEEvent(msgspec.Struct, frozen=True):
    """One dispatched event. ``id`` is the stream's last event ID when it was
    dispatched (it persists across events, as the standard says)."""

    event: str = "message"
    data: str = ""
    id: str = ""


class SSEParser:
    """An incremental event-stream parser; see the module docstring."""

    def __init__(self) -> None:
        self._tail = ""  # text after the last line ending seen
        self._skip_lf = False  # the previous chunk ended in CR: a leading LF is its pair
        self._started = False  # the BOM check has been done
        self._event = ""
        self._data: list[str] = []
        self.last_event_id = ""
        self.retry: int | None = None  # the last valid ``retry`` value, in milliseconds

    def feed(self, chunk: str) -> list[SSEEvent]:
        """Parse the next piece of the stream; return the events it completed."""
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk.startswith("\n"):
                chunk = chunk[1:]
        text = self._tail + chunk
        events: list[SSEEvent] = []
        start = 0
        for match in _EOL.finditer(text):
            if match.group() == "\r" and match.end() == len(text):
                self._skip_lf = True  # maybe the first half of a CRLF split across chunks
            event = self.feed_line(text[start : match.start()])
            if event is not None:
                events.append(event)
            start = match.end()
        self._tail = text[start:]
        return events

    def feed_line(self, line: str) -> SSEEvent | None:
        """Parse one line (without its line ending); return the event an empty
        line dispatches, else None."""
        if not self._started:
            self._started = True
            if line.startswith(_BOM):
                line = line[1:]
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        elif field == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif field == "retry":
            if value and value.isascii() and value.isdigit():
                self.retry = int(value)
        return None

    def close(self) -> None:
        """End of stream: an event without its terminating empty line is dropped."""
        self._tail = ""
        self._skip_lf = False
        self._event = ""
        self._data = []

    def _dispatch(self) -> SSEEvent | None:
        event, data = self._event, self._data
        self._event, self._data = "", []
        if not data:
            return None
        return SSEEvent(event or "message", "\n".join(data), self.last_event_id)

