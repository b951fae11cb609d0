"""ModelInput and its chunks (protocol §4.1): token runs, inline images, image pointers, DMel."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from typing import Any, Literal, TypeAlias

import attrs

from tinkex_actors.errors import ValidationError
from tinkex_actors.types import _packed
from tinkex_actors.types import _validate as v

__all__ = [
    "DmelChunk",
    "EncodedTextChunk",
    "ImageAssetPointerChunk",
    "ImageChunk",
    "ImageFormat",
    "ModelInput",
    "ModelInputChunk",
]

ImageFormat: TypeAlias = Literal["png", "jpeg"]
_IMAGE_FORMATS = ("png", "jpeg")
_REPR_TOKENS = 8
# DMel payloads are serialized TensorContainers: [marker 254]? dtype-byte varint-ndim varint-dims.
_CONSTANT_TENSOR_MARKER = 254
_MAX_DTYPE_BYTE = 7


@attrs.frozen(init=False, repr=False)
class EncodedTextChunk:
    """A run of token ids, kept packed as little-endian int32 (the protobuf wire form).

    Args:
        tokens: token ids: a list or tuple of ints, an ``array.array`` or a numpy integer
            array. Every id must fit in int32; bools and floats are rejected.
    """

    _buf: bytes
    type: Literal["encoded_text"] = "encoded_text"

    def __init__(
        self, tokens: Sequence[int] | Any, type: Literal["encoded_text"] = "encoded_text"
    ) -> None:
        if type != "encoded_text":
            raise ValidationError(
                f"must be 'encoded_text', got {type!r}", field="EncodedTextChunk.type"
            )
        self.__attrs_init__(_pack_tokens(tokens, "EncodedTextChunk.tokens"), type)

    @classmethod
    def from_bytes(cls, data: bytes) -> EncodedTextChunk:
        """A chunk from packed little-endian int32 token ids."""
        raw: object = data
        if not isinstance(raw, bytes | bytearray | memoryview) or len(raw) % 4:
            raise ValidationError(
                "expected bytes holding whole int32 token ids", field="EncodedTextChunk.tokens"
            )
        return cls._trusted(bytes(data))

    @classmethod
    def _trusted(cls, buf: bytes) -> EncodedTextChunk:
        self = object.__new__(cls)
        self.__attrs_init__(buf, "encoded_text")
        return self

    @property
    def tokens(self) -> list[int]:
        """The token ids as a new list."""
        return _packed.unpack(self._buf, "i")

    @property
    def length(self) -> int:
        """Number of tokens."""
        return len(self._buf) // 4

    def to_bytes(self) -> bytes:
        """The token ids packed as little-endian int32."""
        return self._buf

    def __repr__(self) -> str:
        tokens = _packed.unpack(self._buf[: 4 * _REPR_TOKENS], "i")
        more = f", ... ({self.length} tokens)" if self.length > _REPR_TOKENS else ""
        return f"EncodedTextChunk(tokens=[{', '.join(map(str, tokens))}{more}])"


def _pack_tokens(tokens: Any, field: str) -> bytes:
    if _packed.is_ndarray(tokens):
        if tokens.ndim != 1:
            raise ValidationError(f"expected a 1-D array, got shape {tokens.shape}", field=field)
        return _packed.pack_ndarray(tokens, "i", field)[0]
    if isinstance(tokens, Sequence) and tokens and isinstance(tokens[0], list | tuple):
        raise ValidationError("expected a flat list of token ids, got nested lists", field=field)
    return _packed.pack_sequence(tokens, "i", field).buf


def _check_expected_tokens(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    if value is not None:
        v.check_int(value, v.path(instance, attribute), minimum=0)


@attrs.frozen(kw_only=True, repr=False)
class ImageChunk:
    """An inline image; ``data`` travels base64-encoded in JSON and raw in protobuf.

    ``expected_tokens`` is advisory to the server but needed to compute the input's length.
    """

    data: bytes = attrs.field(validator=v.instance_of(bytes))
    format: ImageFormat = attrs.field(validator=v.one_of(_IMAGE_FORMATS))
    expected_tokens: int | None = attrs.field(default=None, validator=_check_expected_tokens)
    type: Literal["image"] = attrs.field(default="image", validator=v.one_of(("image",)))

    @property
    def length(self) -> int:
        """``expected_tokens``; raises ValidationError when it was not given."""
        if self.expected_tokens is None:
            raise ValidationError(
                "must be set to compute the length of a ModelInput holding an image",
                field="ImageChunk.expected_tokens",
            )
        return self.expected_tokens

    def __repr__(self) -> str:
        return (
            f"ImageChunk(format={self.format!r}, data=<{len(self.data)} bytes>, "
            f"expected_tokens={self.expected_tokens!r})"
        )


@attrs.frozen(kw_only=True)
class ImageAssetPointerChunk:
    """An image the server fetches from ``location`` (JSON only: protobuf cannot carry it)."""

    format: ImageFormat = attrs.field(validator=v.one_of(_IMAGE_FORMATS))
    location: str = attrs.field(validator=v.str_field(nonempty=True))
    expected_tokens: int | None = attrs.field(default=None, validator=_check_expected_tokens)
    type: Literal["image_asset_pointer"] = attrs.field(
        default="image_asset_pointer", validator=v.one_of(("image_asset_pointer",))
    )

    @property
    def length(self) -> int:
        """``expected_tokens``; raises ValidationError when it was not given."""
        if self.expected_tokens is None:
            raise ValidationError(
                "must be set to compute the length of a ModelInput holding an image",
                field="ImageAssetPointerChunk.expected_tokens",
            )
        return self.expected_tokens


def _check_dmel(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bytes):
        raise ValidationError(f"expected bytes, got {v.type_name(value)}", field="DmelChunk.dmel")
    _dmel_shape(value)


@attrs.frozen(kw_only=True, repr=False)
class DmelChunk:
    """Audio DMel tokens: a serialized TensorContainer (base64 in JSON, raw in protobuf)."""

    dmel: bytes = attrs.field(validator=_check_dmel)
    type: Literal["dmel"] = attrs.field(default="dmel", validator=v.one_of(("dmel",)))

    @property
    def length(self) -> int:
        """Token count: the container's first dimension."""
        shape = _dmel_shape(self.dmel)
        if not shape:
            raise ValidationError("the TensorContainer has no dimensions", field="DmelChunk.dmel")
        return shape[0]

    def __repr__(self) -> str:
        return f"DmelChunk(dmel=<{len(self.dmel)} bytes>)"


def _dmel_shape(data: bytes) -> tuple[int, ...]:
    """Read the shape from a TensorContainer header without touching the payload."""
    field = "DmelChunk.dmel"
    pos = 0
    if data[:1] == bytes([_CONSTANT_TENSOR_MARKER]):
        pos = 1
    if pos >= len(data) or data[pos] > _MAX_DTYPE_BYTE:
        raise ValidationError("not a TensorContainer (bad or missing dtype byte)", field=field)
    pos += 1
    ndim, pos = _varint(data, pos, field)
    dims = []
    for _ in range(ndim):
        dim, pos = _varint(data, pos, field)
        dims.append(dim)
    return tuple(dims)


def _varint(data: bytes, pos: int, field: str) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValidationError("truncated TensorContainer header", field=field)
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


ModelInputChunk: TypeAlias = EncodedTextChunk | ImageChunk | ImageAssetPointerChunk | DmelChunk
_CHUNK_TYPES = (EncodedTextChunk, ImageChunk, ImageAssetPointerChunk, DmelChunk)


def _to_chunks(chunks: Iterable[ModelInputChunk]) -> tuple[ModelInputChunk, ...]:
    raw: object = chunks
    if isinstance(raw, str | bytes) or not isinstance(raw, Iterable):
        raise ValidationError(
            f"expected a list of chunks, got {v.type_name(chunks)}", field="ModelInput.chunks"
        )
    result = tuple(chunks)
    for i, chunk in enumerate(result):
        if not isinstance(chunk, _CHUNK_TYPES):
            raise ValidationError(
                f"expected EncodedTextChunk, ImageChunk, ImageAssetPointerChunk or DmelChunk, "
                f"got {v.type_name(chunk)}",
                field=f"ModelInput.chunks[{i}]",
            )
    return result


@attrs.frozen
class ModelInput:
    """What the model reads: a sequence of chunks (token runs, images, audio).

    Build one from token ids with :meth:`from_ints`, or from a string with :meth:`from_text`
    (tokenized with a model's tokenizer, see :mod:`tinkex_actors.tokenizer`).
    """

    chunks: tuple[ModelInputChunk, ...] = attrs.field(converter=_to_chunks)

    @classmethod
    def from_text(
        cls,
        text: str,
        model_name: str,
        *,
        tokenizer_id: str | None = None,
        training_client: Any = None,
    ) -> ModelInput:
        """One text chunk holding ``text`` tokenized with ``model_name``'s tokenizer.

        The tokenizer is chosen and loaded as :meth:`tinkex_actors.tokenizer.Tokenizer.get`
        does (``tokenizer_id`` or ``training_client.get_info()`` win over the name). No chat
        template is applied. Empty text gives an empty chunk.

        Raises:
            ValidationError: ``text`` or ``model_name`` is not a str.
            TokenizerError: no tokenizer could be found or loaded.
        """
        # Imported here: the tokenizer module sits above the types package.
        from tinkex_actors.tokenizer import model_input_ids

        ids = model_input_ids(
            text,
            model_name,
            tokenizer_id=tokenizer_id,
            training_client=training_client,
            strict=False,
        )
        return cls.from_ints(ids)

    @classmethod
    def from_text_strict(
        cls,
        text: str,
        model_name: str,
        *,
        tokenizer_id: str | None = None,
        training_client: Any = None,
    ) -> ModelInput:
        """Like :meth:`from_text`, and the result is non-empty and exact.

        Raises:
            ValidationError: ``text`` encodes to no tokens, or does not decode back to exactly
                ``text`` (the tokenizer would change it: unknown characters, normalization).
            TokenizerError: no tokenizer could be found or loaded.
        """
        from tinkex_actors.tokenizer import model_input_ids

        ids = model_input_ids(
            text,
            model_name,
            tokenizer_id=tokenizer_id,
            training_client=training_client,
            strict=True,
        )
        return cls.from_ints(ids)

    @classmethod
    def from_ints(cls, tokens: Sequence[int] | Any) -> ModelInput:
        """One text chunk holding ``tokens`` (a list of ints or a 1-D numpy integer array)."""
        return cls((EncodedTextChunk._trusted(_pack_tokens(tokens, "ModelInput.tokens")),))

    @classmethod
    def empty(cls) -> ModelInput:
        """A ModelInput with no chunks."""
        return cls(())

    def to_ints(self) -> list[int]:
        """Every token id in order; raises ValidationError if any chunk is not text."""
        buffers = []
        for i, chunk in enumerate(self.chunks):
            if not isinstance(chunk, EncodedTextChunk):
                raise ValidationError(
                    f"to_ints needs text chunks only, found {v.type_name(chunk)}",
                    field=f"ModelInput.chunks[{i}]",
                )
            buffers.append(chunk.to_bytes())
        return _packed.unpack(b"".join(buffers), "i")

    @property
    def length(self) -> int:
        """Total token count (image chunks count their ``expected_tokens``)."""
        return sum(chunk.length for chunk in self.chunks)

    def append(self, chunk: ModelInputChunk) -> ModelInput:
        """A new ModelInput with ``chunk`` added at the end."""
        return ModelInput((*self.chunks, chunk))

    def append_int(self, token: int) -> ModelInput:
        """A new ModelInput with one more token (merged into a trailing text chunk)."""
        token_bytes = _pack_tokens([token], "ModelInput.token")
        if self.chunks and isinstance(self.chunks[-1], EncodedTextChunk):
            last = EncodedTextChunk._trusted(self.chunks[-1].to_bytes() + token_bytes)
            return ModelInput((*self.chunks[:-1], last))
        return ModelInput((*self.chunks, EncodedTextChunk._trusted(token_bytes)))


def decode_base64(value: object, field: str) -> bytes:
    """Bytes from a standard-alphabet base64 string (used by the JSON codec)."""
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise ValidationError(f"expected a base64 string, got {v.type_name(value)}", field=field)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationError("is not valid base64", field=field) from exc
