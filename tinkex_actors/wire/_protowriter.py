"""A minimal protobuf wire-format writer for the hot request path.

Serializing through the generated message classes copies every packed array into the message
and again into the output; the forward_backward body is mostly such arrays, so writing the
wire format directly (a list of byte pieces joined once) is several times faster. The format
is the public protobuf encoding: ``tag = field_number << 3 | wire_type``, varints for
integers, 8 little-endian bytes for doubles, a varint length before strings, bytes and
sub-messages. Tests parse the output with the official SDK's generated module.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = ["Message", "tag", "varint"]

_VARINT: Final = 0
_FIXED64: Final = 1
_LEN: Final = 2
_SMALL: Final = tuple(bytes((i,)) for i in range(0x80))
_DOUBLE: Final = struct.Struct("<d")


def varint(value: int) -> bytes:
    """The varint encoding of an int (negatives as 64-bit two's complement, like int64)."""
    if 0 <= value < 0x80:
        return _SMALL[value]
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(field_number: int, wire_type: int) -> bytes:
    """The key of a field: its number and wire type."""
    return varint(field_number << 3 | wire_type)


class Message:
    """A message under construction: byte pieces and their total size."""

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def bytes_field(self, number: int, data: bytes) -> None:
        """A string/bytes field (written even when empty: callers skip defaults)."""
        head = tag(number, _LEN) + varint(len(data))
        self.parts.append(head)
        self.parts.append(data)
        self.size += len(head) + len(data)

    def string_field(self, number: int, text: str) -> None:
        """A string field."""
        self.bytes_field(number, text.encode("utf-8"))

    def varint_field(self, number: int, value: int) -> None:
        """An int32/int64/uint32/bool/enum field."""
        piece = tag(number, _VARINT) + varint(value)
        self.parts.append(piece)
        self.size += len(piece)

    def double_field(self, number: int, value: float) -> None:
        """A double field."""
        piece = tag(number, _FIXED64) + _DOUBLE.pack(value)
        self.parts.append(piece)
        self.size += len(piece)

    def packed_varints(self, number: int, values: tuple[int, ...] | list[int]) -> None:
        """A packed repeated int64 field (skipped when empty, as protobuf does)."""
        if not values:
            return
        self.bytes_field(number, b"".join(varint(v) for v in values))

    def message_field(self, number: int, sub: Message) -> None:
        """A sub-message field (written even when empty: presence matters for oneofs)."""
        head = tag(number, _LEN) + varint(sub.size)
        self.parts.append(head)
        self.parts.extend(sub.parts)
        self.size += len(head) + sub.size

    def to_bytes(self) -> bytes:
        """The serialized message."""
        return b"".join(self.parts)
