"""Tokenizers for a model: id resolution, offline-first loading, a thread-safe handle cache.

``Tokenizer.encode(text, model_name)`` / ``Tokenizer.decode(ids, model_name)`` (and the
``encode_text`` alias) tokenize with the model's tokenizer; ``Tokenizer.get(model_name)``
returns the cached :class:`TokenizerHandle` itself. See ``docs/tokenizer.md``.

Which tokenizer (protocol §5.7, Tinkex's mapping):

1. an explicit ``tokenizer_id``, else the ``model_data.tokenizer_id`` of a training client's
   ``get_info()`` when a ``training_client`` is given;
2. else from the model name (the training client's ``model_data.model_name`` when known), cut
   at the first ``:``: names starting ``meta-llama/Llama-3`` use
   ``thinkingmachineslabinc/meta-llama-3-tokenizer``; ``org/model/variant`` uses
   ``org/model``; anything else is used as is.

Where it is loaded from, first hit wins: a local directory (or ``tokenizer.json`` file) named
by the id; the Hugging Face hub cache (``$HF_HUB_CACHE``, ``$HUGGINGFACE_HUB_CACHE``,
``$HF_HOME/hub``, ``$XDG_CACHE_HOME/huggingface/hub``, ``~/.cache/huggingface/hub``; each
looked up with ``huggingface_hub.try_to_load_from_cache``: the snapshot ``refs/main`` names,
else the newest snapshot holding a ``tokenizer.json``); then the hub over the
network, unless ``HF_HUB_OFFLINE`` is set. Nothing found raises :class:`TokenizerError` saying
what was tried. Failures are not cached (a later call tries again).

Thread-safety: handles are immutable once loaded and may be shared by any number of threads;
each id is loaded once even when many threads ask at the same time.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import tokenizers

from tinkex_actors import _constants as c
from tinkex_actors._logging import get_logger
from tinkex_actors.errors import TinkexTimeoutError, TokenizerError, ValidationError

__all__ = ["Tokenizer", "TokenizerHandle", "resolve_tokenizer_id"]

_TOKENIZER_FILE: Final = "tokenizer.json"
_HUB_REPO_PREFIX: Final = "models--"
_HUB_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_TRUE: Final = frozenset({"1", "true", "yes", "on"})

_cache: dict[str, TokenizerHandle] = {}
_loading: dict[str, threading.Lock] = {}
_cache_lock = threading.Lock()


class TokenizerHandle:
    """A loaded tokenizer: ``encode(text) -> list[int]`` and ``decode(ids) -> str``.

    Obtained from :meth:`Tokenizer.get`; immutable and safe to share between threads.

    Attributes:
        tokenizer_id: the id it was loaded for.
        source: where it was loaded from (a ``tokenizer.json`` path, or ``"hub"``).
    """

    __slots__ = ("_tokenizer", "_vocab_size", "source", "tokenizer_id")

    def __init__(self, tokenizer_id: str, tokenizer: tokenizers.Tokenizer, source: str) -> None:
        self.tokenizer_id = tokenizer_id
        self.source = source
        self._tokenizer = tokenizer
        self._vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added (special) tokens included."""
        return self._vocab_size

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text`` (special tokens added as the tokenizer's template says).

        Raises:
            ValidationError: ``text`` is not a str.
        """
        if not isinstance(text, str):
            raise ValidationError(f"expected a str, got {type(text).__name__}", field="text")
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids
        return ids

    def decode(self, ids: Sequence[int] | Any, *, skip_special_tokens: bool = False) -> str:
        """The text of token ids (a sequence of ints or a 1-D integer numpy array).

        Special tokens are kept unless ``skip_special_tokens`` (as ``transformers`` does).

        Raises:
            ValidationError: ``ids`` is not a sequence of ints in ``[0, vocab_size)``.
        """
        checked = _check_ids(ids, self._vocab_size)
        text: str = self._tokenizer.decode(checked, skip_special_tokens=skip_special_tokens)
        return text

    def __repr__(self) -> str:
        return f"TokenizerHandle(tokenizer_id={self.tokenizer_id!r}, vocab_size={self._vocab_size})"


class Tokenizer:
    """Tokenize with a model's tokenizer: resolution, loading and caching (module docstring)."""

    @staticmethod
    def get(
        model_name: str,
        *,
        tokenizer_id: str | None = None,
        training_client: Any = None,
        local_only: bool = False,
    ) -> TokenizerHandle:
        """The cached handle for ``model_name``'s tokenizer (loaded on first use).

        Args:
            model_name: the base model (``"tinkex/tiny-llama"``, ``"meta-llama/Llama-3.1-8B"``).
            tokenizer_id: use this tokenizer (a hub id or a local path) instead of resolving.
            training_client: an object with ``get_info()`` (a TrainingClient): its
                ``model_data.tokenizer_id`` wins over the model name.
            local_only: never ask the hub over the network (as if ``HF_HUB_OFFLINE`` were
                set), for callers that can do without a tokenizer.

        Raises:
            ValidationError: ``model_name`` or ``tokenizer_id`` is not a non-empty str.
            TokenizerError: the tokenizer is nowhere to be found or does not load.
        """
        resolved = resolve_tokenizer_id(model_name, tokenizer_id, training_client)
        return load(resolved, local_only=local_only)

    @staticmethod
    def encode(
        text: str,
        model_name: str,
        *,
        tokenizer_id: str | None = None,
        training_client: Any = None,
        add_special_tokens: bool = True,
    ) -> list[int]:
        """Token ids of ``text`` with ``model_name``'s tokenizer (see :meth:`get`)."""
        handle = Tokenizer.get(
            model_name, tokenizer_id=tokenizer_id, training_client=training_client
        )
        return handle.encode(text, add_special_tokens=add_special_tokens)

    #: Python-style alias of :meth:`encode`.
    encode_text = encode

    @staticmethod
    def decode(
        ids: Sequence[int] | Any,
        model_name: str,
        *,
        tokenizer_id: str | None = None,
        training_client: Any = None,
        skip_special_tokens: bool = False,
    ) -> str:
        """Text of ``ids`` with ``model_name``'s tokenizer (see :meth:`get`)."""
        handle = Tokenizer.get(
            model_name, tokenizer_id=tokenizer_id, training_client=training_client
        )
        return handle.decode(ids, skip_special_tokens=skip_special_tokens)

    @staticmethod
    def resolve_tokenizer_id(
        model_name: str, *, tokenizer_id: str | None = None, training_client: Any = None
    ) -> str:
        """The tokenizer id :meth:`get` would load (nothing is loaded)."""
        return resolve_tokenizer_id(model_name, tokenizer_id, training_client)

    @staticmethod
    def load(tokenizer_id: str, *, local_only: bool = False) -> TokenizerHandle:
        """The cached handle of a tokenizer id (hub id or local path), loaded on first use."""
        return load(tokenizer_id, local_only=local_only)

    @staticmethod
    def cached_ids() -> list[str]:
        """Ids of the handles loaded so far."""
        with _cache_lock:
            return sorted(_cache)

    @staticmethod
    def clear_cache() -> None:
        """Forget every loaded handle (handles already held keep working)."""
        with _cache_lock:
            _cache.clear()


# ---------------------------------------------------------------------------- resolution
def _text(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        shown = repr(value) if isinstance(value, str) else type(value).__name__
        raise ValidationError(f"expected a non-empty str, got {shown}", field=field)
    return value


def tokenizer_id_for_model(model_name: str) -> str:
    """The tokenizer id of a model name alone (no ``get_info``): the mapping of step 2."""
    name = _text(model_name, "model_name").split(":", 1)[0]
    if name.startswith(c.LLAMA3_MODEL_PREFIX):
        return c.LLAMA3_TOKENIZER_ID
    parts = name.split("/")
    if len(parts) >= 3 and all(parts[:2]):
        return f"{parts[0]}/{parts[1]}"
    return name


def resolve_tokenizer_id(
    model_name: str, tokenizer_id: str | None = None, training_client: Any = None
) -> str:
    """The tokenizer id for a model (module docstring: explicit, get_info, then the name)."""
    _text(model_name, "model_name")
    if tokenizer_id is not None:
        return _text(tokenizer_id, "tokenizer_id")
    if training_client is not None:
        info = training_client.get_info()
        if hasattr(info, "result"):
            info = info.result(c.DEFAULT_TIMEOUT)
        data = getattr(info, "model_data", None)
        from_info = getattr(data, "tokenizer_id", None)
        if isinstance(from_info, str) and from_info.strip():
            return from_info
        info_model = getattr(data, "model_name", None)
        if isinstance(info_model, str) and info_model.strip():
            model_name = info_model
    return tokenizer_id_for_model(model_name)


# ---------------------------------------------------------------------------- loading
def load(tokenizer_id: str, *, local_only: bool = False) -> TokenizerHandle:
    """The cached handle of ``tokenizer_id``; loaded once even under concurrent first use."""
    key = _text(tokenizer_id, "tokenizer_id")
    with _cache_lock:
        handle = _cache.get(key)
        if handle is not None:
            return handle
        gate = _loading.setdefault(key, threading.Lock())
    # Another thread may be loading this id (a hub download can take a while): wait for it,
    # boundedly, rather than load it twice.
    if not gate.acquire(timeout=c.TOKENIZER_LOAD_WAIT):
        raise TinkexTimeoutError(
            f"tokenizer {key!r}: another thread has been loading it for over "
            f"{c.TOKENIZER_LOAD_WAIT:g} s"
        )
    try:
        with _cache_lock:
            handle = _cache.get(key)
        if handle is None:
            handle = _load_uncached(key, local_only)
            with _cache_lock:
                _cache[key] = handle
                _loading.pop(key, None)
    finally:
        gate.release()
    return handle


def _offline() -> bool:
    return os.environ.get(c.ENV_HF_HUB_OFFLINE, "").strip().lower() in _TRUE


def hub_cache_roots() -> list[Path]:
    """The Hugging Face hub cache directories searched, in order (read at call time)."""
    env = os.environ
    roots = [
        Path(env[key]).expanduser()
        for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")
        if env.get(key)
    ]
    if env.get("HF_HOME"):
        roots.append(Path(env["HF_HOME"]).expanduser() / "hub")
    if env.get("XDG_CACHE_HOME"):
        roots.append(Path(env["XDG_CACHE_HOME"]).expanduser() / "huggingface" / "hub")
    roots.append(Path("~/.cache/huggingface/hub").expanduser())
    unique: list[Path] = []
    for root in roots:
        if root not in unique:
            unique.append(root)
    return unique


def _from_hub_cache(tokenizer_id: str, root: Path) -> Path | None:
    # Imported here: huggingface_hub takes a tenth of a second to import, and most programs
    # never load a tokenizer from the cache.
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(tokenizer_id, _TOKENIZER_FILE, cache_dir=root)
    except ValueError:  # an id the hub's stricter rules refuse ("--", ".."): looked up below
        found = None
    if isinstance(found, str):
        return Path(found)
    # Not in the snapshot refs/main names (or no refs/main: a download by commit): the most
    # recent snapshot that has a tokenizer.
    snapshots = root / (_HUB_REPO_PREFIX + tokenizer_id.replace("/", "--")) / "snapshots"
    if not snapshots.is_dir():
        return None
    found_in = [p / _TOKENIZER_FILE for p in snapshots.iterdir() if (p / _TOKENIZER_FILE).is_file()]
    return max(found_in, key=lambda p: p.stat().st_mtime) if found_in else None


def _read(tokenizer_id: str, path: Path) -> TokenizerHandle:
    try:
        loaded = tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust loader raises plain Exception subclasses
        raise TokenizerError(
            f"tokenizer {tokenizer_id!r}: cannot load {str(path)!r}: {exc}"
        ) from exc
    get_logger("tokenizer").debug(
        "tinkex.tokenizer.loaded", tokenizer_id=tokenizer_id, path=str(path)
    )
    return TokenizerHandle(tokenizer_id, loaded, str(path))


def _load_uncached(tokenizer_id: str, local_only: bool) -> TokenizerHandle:
    tried: list[str] = []
    local = Path(tokenizer_id).expanduser()
    if local.is_dir():
        if (local / _TOKENIZER_FILE).is_file():
            return _read(tokenizer_id, local / _TOKENIZER_FILE)
        raise TokenizerError(f"tokenizer {tokenizer_id!r}: the directory has no {_TOKENIZER_FILE}")
    if local.is_file():
        return _read(tokenizer_id, local)
    if not _HUB_ID.match(tokenizer_id):
        raise TokenizerError(
            f"tokenizer {tokenizer_id!r}: neither an existing local path nor a hub id ('org/name')"
        )
    roots = hub_cache_roots()
    for root in roots:
        found = _from_hub_cache(tokenizer_id, root)
        if found is not None:
            return _read(tokenizer_id, found)
    tried.append(f"not in the Hugging Face cache ({', '.join(str(r) for r in roots)})")
    if local_only or _offline():
        why = "local_only" if local_only else f"{c.ENV_HF_HUB_OFFLINE} is set"
        tried.append(f"{why}, so the hub was not asked")
        raise TokenizerError(f"tokenizer {tokenizer_id!r} not found: {'; '.join(tried)}")
    try:
        loaded = tokenizers.Tokenizer.from_pretrained(tokenizer_id)
    except Exception as exc:
        tried.append(f"the hub download failed: {exc}")
        raise TokenizerError(f"tokenizer {tokenizer_id!r} not found: {'; '.join(tried)}") from exc
    get_logger("tokenizer").info("tinkex.tokenizer.downloaded", tokenizer_id=tokenizer_id)
    return TokenizerHandle(tokenizer_id, loaded, "hub")


def _check_ids(ids: object, vocab_size: int) -> list[int]:
    tolist = getattr(ids, "tolist", None)
    if callable(tolist) and getattr(ids, "ndim", 1) == 1:
        ids = tolist()  # numpy arrays
    if isinstance(ids, str | bytes) or not isinstance(ids, Sequence):
        raise ValidationError(
            f"expected a sequence of token ids, got {type(ids).__name__}", field="ids"
        )
    checked = list(ids)
    for i, value in enumerate(checked):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(f"expected an int, got {type(value).__name__}", field=f"ids[{i}]")
        if not 0 <= value < vocab_size:
            raise ValidationError(
                f"{value} is outside the vocabulary [0, {vocab_size})", field=f"ids[{i}]"
            )
    return checked


# ---------------------------------------------------------------------------- ModelInput
def model_input_ids(
    text: str,
    model_name: str,
    *,
    tokenizer_id: str | None,
    training_client: Any,
    strict: bool,
) -> list[int]:
    """Token ids for ``ModelInput.from_text`` (``strict``: non-empty and lossless)."""
    handle = Tokenizer.get(model_name, tokenizer_id=tokenizer_id, training_client=training_client)
    ids = handle.encode(text)
    if not strict:
        return ids
    if not ids:
        raise ValidationError("encodes to no tokens (empty text?)", field="text")
    back = handle.decode(ids, skip_special_tokens=True)
    if back != text:
        raise ValidationError(
            f"does not survive tokenization with {handle.tokenizer_id!r} "
            f"(decodes back to {back[:80]!r}...)",
            field="text",
        )
    return ids
