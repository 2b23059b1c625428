"""`Utf8Boundary`: cut a byte stream into chunks at UTF-8 character boundaries, keeping
every byte exactly as it came (pure).

egw stores a task's output byte for byte (binary output included). But a chunk
that ends in the middle of a character would make an SSE client see the halves
of one character as two undecodable frames, so each chunk ends where a
character ends: the start of a multi-byte character whose last bytes have not
arrived yet is held back (at most 3 bytes) until they do. Bytes that can never
become a character (``\\xff``, a stray continuation byte) are not held: they go
out as they are, and the SSE layer carries them in ``log-b64`` frames.
"""

from __future__ import annotations


def _needed(lead: int) -> int:
    """How many continuation bytes a lead byte announces (0: not a multi-byte lead)."""
    if 0xC2 <= lead <= 0xDF:
        return 1
    if 0xE0 <= lead <= 0xEF:
        return 2
    if 0xF0 <= lead <= 0xF4:
        return 3
    return 0


def split_point(data: bytes) -> int:
    """Where the last, unfinished character of ``data`` starts (``len(data)`` if none)."""
    end = len(data)
    for back in range(1, min(4, end) + 1):
        byte = data[end - back]
        if byte & 0xC0 != 0x80:  # not a continuation byte: the last character starts here
            needed = _needed(byte)
            return end - back if needed >= back else end
    return end


class Utf8Boundary:
    """Feed raw bytes, get the same bytes back in chunks that never split a character."""

    def __init__(self) -> None:
        self._held = b""

    def feed(self, data: bytes) -> bytes:
        data = self._held + data
        cut = split_point(data)
        self._held = data[cut:]
        return data[:cut]

    @property
    def pending(self) -> int:
        """Bytes held back (the start of an unfinished character)."""
        return len(self._held)

    def flush(self) -> bytes:
        """What is held, as it is: the stream ended inside a character."""
        held, self._held = self._held, b""
        return held
