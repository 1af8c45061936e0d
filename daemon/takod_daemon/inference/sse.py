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

Bounds (the peer is not trusted; without them a stream without line ends, or
``data`` lines without the empty line that ends an event, would fill memory):
a line may be at most ``max_line`` characters and an event's data
``max_event``; past either, :class:`~takod_daemon.peer_input.TooLarge`.
"""

from __future__ import annotations

import re

import msgspec

from takod_daemon.peer_input import MAX_LINE, LineTooLong, TooLarge

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

    def __init__(self, *, max_line: int = MAX_LINE, max_event: int = MAX_LINE) -> None:
        self.max_line = max_line
        self.max_event = max_event
        self._tail: list[str] = []  # pieces of text after the last line ending seen
        self._tail_size = 0
        self._skip_lf = False  # the previous chunk ended in CR: a leading LF is its pair
        self._started = False  # the BOM check has been done
        self._event = ""
        self._data: list[str] = []
        self._data_size = 0
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
        if _EOL.search(chunk) is None:
            # Held as pieces, joined once the line ends: a long line costs no re-copying.
            self._hold(chunk)
            return []
        text = "".join(self._tail) + chunk
        self._tail, self._tail_size = [], 0
        events: list[SSEEvent] = []
        start = 0
        for match in _EOL.finditer(text):
            if match.group() == "\r" and match.end() == len(text):
                self._skip_lf = True  # maybe the first half of a CRLF split across chunks
            if match.start() - start > self.max_line:
                raise LineTooLong(match.start() - start)
            event = self.feed_line(text[start : match.start()])
            if event is not None:
                events.append(event)
            start = match.end()
        self._hold(text[start:])
        return events

    def _hold(self, piece: str) -> None:
        if piece:
            self._tail.append(piece)
            self._tail_size += len(piece)
            if self._tail_size > self.max_line:
                raise LineTooLong(self._tail_size)

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
            self._data_size += len(value) + 1
            if self._data_size > self.max_event:
                raise TooLarge(f"event of more than {self.max_event} characters")
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
        self._tail, self._tail_size = [], 0
        self._skip_lf = False
        self._event = ""
        self._data, self._data_size = [], 0

    def _dispatch(self) -> SSEEvent | None:
        event, data = self._event, self._data
        self._event, self._data, self._data_size = "", [], 0
        if not data:
            return None
        return SSEEvent(event or "message", "\n".join(data), self.last_event_id)

