"""``Config``: everything a client needs to talk to one Tinker tenant, validated once.

Build one with :meth:`Config.new` (explicit options, then the environment, then defaults) or
construct it directly (explicit options, then defaults; the environment is never read)::

    config = Config.new(api_key="tml-...", timeout=30)
    config = Config(api_key="tml-...", base_url="http://127.0.0.1:8000")
    faster = config.with_(max_retries=2)

A Config is frozen and hashable: equal configs are the same tenant and share one connection
pool (see :mod:`tinkex_actors.transport`). It is validated when it is built: a wrong value
raises :class:`~tinkex_actors.errors.ConfigError` naming the option, so nothing fails later in
a request. ``repr()`` shows every option except the secrets (the API key, the credential
command, the Cloudflare Access secret, default header values and proxy credentials), which
are masked.

A credential is required at construction: an API key, or a credential command (a shell
command printing one, run whenever a fresh credential is needed). A Config without either cannot
make any request, and failing here, before a client starts threads or opens a session, gives the
clearest error. :meth:`Config.new` finds them in the official SDK's order: ``api_key=``,
``TINKER_API_KEY``, ``TINKER_CREDENTIAL_CMD``, the stored key file ``~/.tinker/credentials.json``
(see ``docs/configuration.md``, "Credentials").

Thread-safety: a Config is immutable and may be shared freely between threads.
"""

from __future__ import annotations

import math
import os
import re
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import attrs

from tinkex_actors import _constants as c
from tinkex_actors._credentials import (
    Origin,
    default_credentials_path,
    key_problem,
    read_stored_key,
)
from tinkex_actors._redact import REDACTED, fingerprint, mask_key, redact_url
from tinkex_actors.errors import ConfigError

__all__ = ["Config"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
# RFC 9110 token characters: what a header name may contain.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Header values: visible ASCII, spaces and tabs; no CR, LF or NUL (header injection).
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e]*$")
# Headers the transport sets itself; configure them through their own options instead.
_RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        c.HEADER_API_KEY,
        c.HEADER_IDEMPOTENCY_KEY,
        c.HEADER_RETRY_COUNT,
        c.HEADER_READ_TIMEOUT,
        c.HEADER_CF_CLIENT_ID,
        c.HEADER_CF_CLIENT_SECRET,
        "Content-Type",
        "Accept",
        "Content-Length",
        "Transfer-Encoding",
        "Host",
        "Connection",
    )
)


class _FrozenMap(Mapping[str, str]):
    """An immutable, hashable ``str -> str`` mapping (the form Config stores mappings in)."""

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[str, str]) -> None:
        self._data = dict(data)
        self._hash = hash(frozenset(self._data.items()))

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return repr(self._data)


# ------------------------------------------------------------------------------ field checks
def _number(field: str, value: object, *, minimum: float = 0.0, inclusive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(field, f"expected a number of seconds, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number < minimum or (number == minimum and not inclusive):
        bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
        raise ConfigError(field, f"must be a finite number {bound}, got {value!r}")
    return number


def _integer(field: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field, f"expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ConfigError(field, f"must be >= {minimum}, got {value}")
    return value


def _boolean(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(field, f"expected a bool, got {type(value).__name__}")
    return value


def _optional_text(field: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(field, f"expected a str or None, got {type(value).__name__}")
    if not value.strip():
        raise ConfigError(field, "must not be empty or blank (use None to leave it unset)")
    return value


def _header_safe(field: str, value: str, what: str = "value") -> None:
    # Shown without the value: the value may be a secret.
    if not _HEADER_VALUE.match(value):
        raise ConfigError(field, f"{what} may hold only printable ASCII (no CR, LF or NUL)")


def _api_key(value: object, command: str | None) -> str | None:
    if value is None:
        if command is not None:
            return None
        raise ConfigError(
            "api_key",
            f"no credential: pass api_key= or credential_cmd=, set {c.ENV_API_KEY} or "
            f"{c.ENV_CREDENTIAL_CMD}, or store a key with `tinker auth login` "
            f"(~/{c.CREDENTIALS_FILE}); static keys start with {c.API_KEY_PREFIX!r}, "
            f"JWTs with {c.JWT_PREFIX!r}",
        )
    if not isinstance(value, str):
        raise ConfigError("api_key", f"expected a str, got {type(value).__name__}")
    problem = key_problem(value)
    if problem is not None:
        raise ConfigError("api_key", problem)
    return value


def _command(value: object) -> str | None:
    # Shown without the value: a command line may carry a token of its own.
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError("credential_cmd", f"expected a str or None, got {type(value).__name__}")
    if not value.strip():
        raise ConfigError(
            "credential_cmd", "must not be empty or blank (use None to leave it unset)"
        )
    if "\x00" in value:
        raise ConfigError("credential_cmd", "must not contain NUL characters")
    return value


def _base_url(value: object) -> str:
    if value is None or value == "":
        return c.DEFAULT_BASE_URL
    if not isinstance(value, str):
        raise ConfigError("base_url", f"expected a str, got {type(value).__name__}")
    url = value.strip().rstrip("/")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError("base_url", f"not a valid URL ({exc}): {redact_url(url)!r}") from None
    del port  # parsed only to validate it
    if parts.scheme not in ("http", "https"):
        raise ConfigError("base_url", f"scheme must be http or https, got {redact_url(url)!r}")
    if not parts.hostname:
        raise ConfigError("base_url", f"has no host: {redact_url(url)!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("base_url", "must not embed credentials (user:password@)")
    if parts.query or parts.fragment:
        raise ConfigError("base_url", f"must not have a query or fragment: {redact_url(url)!r}")
    return url


def _tags(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    items: list[object]
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, Sequence | set | frozenset):
        items = list(value)
    else:
        raise ConfigError("tags", f"expected a sequence of str, got {type(value).__name__}")
    seen: dict[str, None] = {}
    for i, tag in enumerate(items):
        if not isinstance(tag, str) or not tag.strip():
            raise ConfigError("tags", f"tags[{i}] must be a non-empty str, got {tag!r}")
        seen.setdefault(tag, None)
    return tuple(seen)


def _string_map(field: str, value: object, *, headers: bool) -> _FrozenMap:
    if value is None:
        return _FrozenMap({})
    if not isinstance(value, Mapping):
        raise ConfigError(field, f"expected a mapping of str to str, got {type(value).__name__}")
    seen_lower: set[str] = set()
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ConfigError(
                field,
                f"keys and values must be str, got {type(key).__name__} -> {type(item).__name__}",
            )
        if headers:
            if not _TOKEN.match(key):
                raise ConfigError(field, f"{key!r} is not a valid header name")
            if key.lower() in _RESERVED_HEADERS:
                raise ConfigError(field, f"{key!r} is set by the transport; use its own option")
            if key.lower() in seen_lower:
                raise ConfigError(field, f"{key!r} is given twice (header names ignore case)")
            seen_lower.add(key.lower())
            _header_safe(field, item, f"the value of {key!r}")
    return _FrozenMap(value)


def _ca_bundle(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike):
        raise ConfigError("ca_bundle", f"expected a path, got {type(value).__name__}")
    path = os.fspath(value)
    if not isinstance(path, str) or not os.path.exists(path):
        raise ConfigError("ca_bundle", f"no such file or directory: {path!r}")
    return path


def _proxy(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError("proxy", f"expected a str URL, got {type(value).__name__}")
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port
    except ValueError:
        raise ConfigError("proxy", f"not a valid URL: {redact_url(value)!r}") from None
    del port
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            "proxy", f"must be an http:// or https:// URL with a host, got {redact_url(value)!r}"
        )
    return value


def _env_flag(env: Mapping[str, str], name: str, field: str) -> bool | None:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return None
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(field, f"{name}={raw!r} is not one of {sorted(_TRUE | _FALSE)}")


def _env_text(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    return raw or None


def _credential_sources(
    api_key: str | None, command: str | None, env: Mapping[str, str], process_env: bool
) -> tuple[str | None, Origin | None, str | None, Origin | None]:
    """(key, its origin, command, its origin) in the official SDK's order (protocol §1.1)."""
    env_kind = "env" if process_env else "given"
    cmd_origin: Origin | None = Origin("given", "credential_cmd")
    if command is None:
        command = _env_text(env, c.ENV_CREDENTIAL_CMD)
        cmd_origin = None if command is None else Origin(env_kind, c.ENV_CREDENTIAL_CMD)
    if api_key is not None:
        return api_key, Origin("given", "api_key"), command, cmd_origin
    from_env = _env_text(env, c.ENV_API_KEY)
    if from_env is not None:
        return from_env, Origin(env_kind, c.ENV_API_KEY), command, cmd_origin
    if command is not None:
        # The stored default never shadows a credential command (the official SDK's rule).
        return None, None, command, cmd_origin
    path = default_credentials_path(None if process_env else env)
    stored = None if path is None else read_stored_key(path)
    if stored is None:
        return None, None, None, None  # validation reports the missing credential
    assert path is not None
    return stored, Origin("file", str(path)), None, None


@attrs.frozen(kw_only=True, repr=False, cache_hash=True)
class Config:
    """Options of one Tinker tenant: credentials, endpoint, timeouts, retries, limits.

    Prefer :meth:`Config.new`, which also reads the environment. Every option is keyword-only.

    Attributes:
        api_key: the credential sent as ``X-API-Key``: a static key (``tml-...``) or a JWT
            (``eyJ...``). Required unless ``credential_cmd`` is set. Never shown in reprs,
            logs, errors or telemetry. When the server announces JWT auth, it is exchanged
            for short-lived JWTs (see ``docs/configuration.md``).
        credential_cmd: a shell command that prints a credential (a ``tml-`` key or a JWT).
            Run whenever a fresh credential is needed (never at construction): when there is
            no ``api_key``, for the first request and after a rejection; and for each JWT
            exchange when the server asks for it (``credential_default_source``). Its output
            is never logged; the command itself is masked in ``repr``.
        base_url: the server's URL; a path prefix is kept (``.../services/tinker-prod``), a
            trailing ``/`` is dropped, an empty string means the default.
        timeout: read timeout of one HTTP request, in seconds (per socket operation).
        connect_timeout: TCP/TLS connect timeout, in seconds.
        max_retries: transport-level retries of one call (retryable statuses, connection
            errors, timeouts); calls the protocol never retries pass ``max_retries=0``.
        tags: session tags (deduplicated, order kept); a str is split on commas.
        project_id: project sent with ``create_session``.
        telemetry_enabled: upload SDK telemetry events to the server.
        cf_access_client_id: Cloudflare Access client id (``CF-Access-Client-Id``).
        cf_access_client_secret: Cloudflare Access secret (``CF-Access-Client-Secret``);
            both Cloudflare options are given or neither.
        default_headers: extra headers sent with every request to the base URL (values are
            masked in ``repr``). Headers the transport manages cannot be set here.
        user_metadata: ``str -> str`` metadata sent with ``create_session``.
        verify_tls: verify server certificates. Turning it off must be explicit; the
            transport logs a WARNING when it builds a pool without verification.
        ca_bundle: a CA bundle file or directory used instead of certifi's bundle.
        proxy: an explicit ``http://`` or ``https://`` proxy URL for every request. When
            None, the proxy environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``,
            ``NO_PROXY``, any case) is read once, when the tenant's connection pool is built.
        http_pool_size: keep-alive connections kept per origin.
        http_pool_block: when every pooled connection is busy, wait for one (True) instead
            of opening an extra connection that is closed after use (False).
        max_response_bytes: the largest answer body read into memory; a bigger one raises
            :class:`~tinkex_actors.errors.ResponseTooLargeError` (streamed downloads are
            not bounded).
        max_chunk_datums: most datums per forward_backward chunk (the server's
            ``client/config`` announcement wins when present).
        max_chunk_tokens: most tokens per forward_backward chunk (likewise).
        sample_max_inflight: most samples in flight per sampling client (submitted, result
            not yet in); the server's ``sample_max_concurrent_requests`` lowers it. Samples
            beyond it wait in a queue that holds no thread.
        sample_max_inflight_throttled: most sample submissions at once per API key during
            the throttle window after a 429.
        sample_max_queued: most samples waiting for an in-flight slot per sampling client;
            None: unbounded.
        sample_queue_full: what ``sample()`` does when that queue is full: ``"raise"``
            :class:`~tinkex_actors.errors.QueueFullError`, or ``"wait"`` (block the caller
            until there is room, within the sample's ``timeout``).
        sample_dispatch_threads: threads per tenant that submit samples and fetch their
            results.
        poll_threads: threads per tenant for single long polls of samples, used only with
            servers that do not offer batched polling (``retrieve_futures``).
        heartbeat_interval: seconds between session heartbeats.
        poll_timeout: read timeout of a ``retrieve_future`` long poll, in seconds.
    """

    api_key: str | None = None
    credential_cmd: str | None = None
    base_url: str = c.DEFAULT_BASE_URL
    timeout: float = c.DEFAULT_TIMEOUT
    connect_timeout: float = c.DEFAULT_CONNECT_TIMEOUT
    max_retries: int = c.DEFAULT_MAX_RETRIES
    tags: Sequence[str] = ()
    project_id: str | None = None
    telemetry_enabled: bool = True
    cf_access_client_id: str | None = None
    cf_access_client_secret: str | None = None
    default_headers: Mapping[str, str] = attrs.field(factory=dict)
    user_metadata: Mapping[str, str] = attrs.field(factory=dict)
    verify_tls: bool = True
    ca_bundle: str | None = None
    proxy: str | None = None
    http_pool_size: int = c.HTTP_POOL_SIZE
    http_pool_block: bool = c.HTTP_POOL_BLOCK
    max_response_bytes: int = c.HTTP_MAX_RESPONSE_BYTES
    max_chunk_datums: int = c.CHUNK_MAX_DATUMS
    max_chunk_tokens: int = c.CHUNK_MAX_TOKENS
    sample_max_inflight: int = c.SAMPLE_MAX_INFLIGHT
    sample_max_inflight_throttled: int = c.SAMPLE_MAX_INFLIGHT_THROTTLED
    sample_max_queued: int | None = None
    sample_queue_full: str = "raise"
    sample_dispatch_threads: int = c.SAMPLE_DISPATCH_THREADS
    poll_threads: int = c.POLL_THREADS
    heartbeat_interval: float = c.HEARTBEAT_INTERVAL
    poll_timeout: float = c.RETRIEVE_FUTURE_TIMEOUT
    _tenant_id: str = attrs.field(init=False, eq=False, hash=False)
    # Where api_key / credential_cmd came from (Config.new records it; not part of equality).
    _key_origin: Origin | None = attrs.field(init=False, eq=False, hash=False)
    _cmd_origin: Origin | None = attrs.field(init=False, eq=False, hash=False)

    #: Options whose values are secrets (masked in ``repr``).
    SECRET_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"api_key", "cf_access_client_secret", "credential_cmd"}
    )

    def __attrs_post_init__(self) -> None:
        # Normalize and validate every option once; frozen, so assign through object.
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        put("credential_cmd", _command(self.credential_cmd))
        put("api_key", _api_key(self.api_key, self.credential_cmd))
        put("base_url", _base_url(self.base_url))
        for name in ("timeout", "connect_timeout", "heartbeat_interval", "poll_timeout"):
            put(name, _number(name, getattr(self, name)))
        put("max_retries", _integer("max_retries", self.max_retries, minimum=0))
        for name in (
            "http_pool_size",
            "max_response_bytes",
            "max_chunk_datums",
            "max_chunk_tokens",
            "sample_max_inflight",
            "sample_max_inflight_throttled",
            "sample_dispatch_threads",
            "poll_threads",
        ):
            put(name, _integer(name, getattr(self, name), minimum=1))
        if self.sample_max_queued is not None:
            put(
                "sample_max_queued",
                _integer("sample_max_queued", self.sample_max_queued, minimum=1),
            )
        if self.sample_queue_full not in ("raise", "wait"):
            raise ConfigError(
                "sample_queue_full", f"expected 'raise' or 'wait', got {self.sample_queue_full!r}"
            )
        put("tags", _tags(self.tags))
        put("project_id", _optional_text("project_id", self.project_id))
        put("telemetry_enabled", _boolean("telemetry_enabled", self.telemetry_enabled))
        put("verify_tls", _boolean("verify_tls", self.verify_tls))
        put("http_pool_block", _boolean("http_pool_block", self.http_pool_block))
        for name in ("cf_access_client_id", "cf_access_client_secret"):
            text = _optional_text(name, getattr(self, name))
            if text is not None:
                _header_safe(name, text)
            put(name, text)
        if (self.cf_access_client_id is None) != (self.cf_access_client_secret is None):
            missing = (
                "cf_access_client_secret"
                if self.cf_access_client_secret is None
                else "cf_access_client_id"
            )
            raise ConfigError(missing, "Cloudflare Access needs both the client id and secret")
        put("default_headers", _string_map("default_headers", self.default_headers, headers=True))
        put("user_metadata", _string_map("user_metadata", self.user_metadata, headers=False))
        put("ca_bundle", _ca_bundle(self.ca_bundle))
        if self.ca_bundle is not None and not self.verify_tls:
            raise ConfigError("ca_bundle", "is set but verify_tls is False; choose one")
        put("proxy", _proxy(self.proxy))
        put("_tenant_id", fingerprint(f"{self.base_url}\n{self._credential_identity()}"))
        key_given, cmd_given = Origin("given", "api_key"), Origin("given", "credential_cmd")
        put("_key_origin", None if self.api_key is None else key_given)
        put("_cmd_origin", None if self.credential_cmd is None else cmd_given)

    def _credential_identity(self) -> str:
        # What tells tenants apart: the key, or else the command that produces it.
        if self.api_key is not None:
            return self.api_key
        return f"{c.ENV_CREDENTIAL_CMD}\n{self.credential_cmd}"

    # ------------------------------------------------------------------ construction
    @classmethod
    def new(
        cls,
        *,
        api_key: str | None = None,
        credential_cmd: str | None = None,
        base_url: str | None = None,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        max_retries: int | None = None,
        tags: Sequence[str] | str | None = None,
        project_id: str | None = None,
        telemetry_enabled: bool | None = None,
        cf_access_client_id: str | None = None,
        cf_access_client_secret: str | None = None,
        default_headers: Mapping[str, str] | None = None,
        user_metadata: Mapping[str, str] | None = None,
        verify_tls: bool | None = None,
        ca_bundle: str | os.PathLike[str] | None = None,
        proxy: str | None = None,
        http_pool_size: int | None = None,
        http_pool_block: bool | None = None,
        max_response_bytes: int | None = None,
        max_chunk_datums: int | None = None,
        max_chunk_tokens: int | None = None,
        sample_max_inflight: int | None = None,
        sample_max_inflight_throttled: int | None = None,
        sample_max_queued: int | None = None,
        sample_queue_full: str | None = None,
        sample_dispatch_threads: int | None = None,
        poll_threads: int | None = None,
        heartbeat_interval: float | None = None,
        poll_timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Config:
        """Build a Config: explicit options, else the environment, else the defaults.

        ``None`` means "not given". The environment (``env``, default :data:`os.environ`,
        read once here and never again) supplies ``TINKER_API_KEY``, ``TINKER_CREDENTIAL_CMD``,
        ``TINKER_BASE_URL`` (empty means unset), ``TINKER_TAGS`` (comma-separated),
        ``TINKER_PROJECT_ID``, ``TINKER_TELEMETRY`` (``1/true/yes/on`` or ``0/false/no/off``)
        and ``CLOUDFLARE_ACCESS_CLIENT_ID`` / ``CLOUDFLARE_ACCESS_CLIENT_SECRET``.

        The credential comes from the first of: ``api_key``, ``TINKER_API_KEY``, the credential
        command (``credential_cmd``, else ``TINKER_CREDENTIAL_CMD``), and the default key of the
        stored key file ``$HOME/.tinker/credentials.json`` (``HOME`` from ``env``; consulted only
        when no credential command is set). A credential command is kept even when a key was
        found: a server may ask for it (``credential_default_source``). The command is not run
        here.

        Raises:
            ConfigError: an option (or the environment variable feeding it) is invalid;
                ``field`` names the option.
        """
        source: Mapping[str, str] = os.environ if env is None else env
        given: dict[str, Any] = {
            name: value
            for name, value in (
                ("timeout", timeout),
                ("connect_timeout", connect_timeout),
                ("max_retries", max_retries),
                ("default_headers", default_headers),
                ("user_metadata", user_metadata),
                ("verify_tls", verify_tls),
                ("ca_bundle", ca_bundle),
                ("proxy", proxy),
                ("http_pool_size", http_pool_size),
                ("http_pool_block", http_pool_block),
                ("max_response_bytes", max_response_bytes),
                ("max_chunk_datums", max_chunk_datums),
                ("max_chunk_tokens", max_chunk_tokens),
                ("sample_max_inflight", sample_max_inflight),
                ("sample_max_inflight_throttled", sample_max_inflight_throttled),
                ("sample_max_queued", sample_max_queued),
                ("sample_queue_full", sample_queue_full),
                ("sample_dispatch_threads", sample_dispatch_threads),
                ("poll_threads", poll_threads),
                ("heartbeat_interval", heartbeat_interval),
                ("poll_timeout", poll_timeout),
            )
            if value is not None
        }
        from_env: dict[str, Any] = {
            "base_url": (base_url or None, _env_text(source, c.ENV_BASE_URL)),
            "tags": (tags, _env_text(source, c.ENV_TAGS)),
            "project_id": (project_id, _env_text(source, c.ENV_PROJECT_ID)),
            "telemetry_enabled": (
                telemetry_enabled,
                _env_flag(source, c.ENV_TELEMETRY, "telemetry_enabled"),
            ),
            "cf_access_client_id": (cf_access_client_id, _env_text(source, c.ENV_CF_CLIENT_ID)),
            "cf_access_client_secret": (
                cf_access_client_secret,
                _env_text(source, c.ENV_CF_CLIENT_SECRET),
            ),
        }
        for name, (explicit, environ) in from_env.items():
            chosen = explicit if explicit is not None else environ
            if chosen is not None:
                given[name] = chosen
        key, key_origin, command, cmd_origin = _credential_sources(
            api_key, credential_cmd, source, env is None
        )
        config = cls(api_key=key, credential_cmd=command, **given)
        object.__setattr__(config, "_key_origin", key_origin)
        object.__setattr__(config, "_cmd_origin", cmd_origin)
        return config

    def with_(self, **changes: Any) -> Config:
        """Return a validated copy with ``changes`` applied (the environment is not read).

        Raises:
            ConfigError: an unknown option name, or an invalid value.
        """
        known = {a.name for a in attrs.fields(Config) if a.init}
        for name in changes:
            if name not in known:
                raise ConfigError(name, "unknown option")
        copy = attrs.evolve(self, **changes)
        # Unchanged credentials keep the record of where they came from.
        if "api_key" not in changes and copy.api_key == self.api_key:
            object.__setattr__(copy, "_key_origin", self._key_origin)
        if "credential_cmd" not in changes and copy.credential_cmd == self.credential_cmd:
            object.__setattr__(copy, "_cmd_origin", self._cmd_origin)
        return copy

    #: Alias of :meth:`with_` (the attrs spelling).
    evolve = with_

    # ------------------------------------------------------------------ tenant identity
    @property
    def tenant_id(self) -> str:
        """A short one-way id of (base_url, api_key): safe in logs, metrics and telemetry."""
        return self._tenant_id

    @property
    def tenant_key(self) -> tuple[str, str]:
        """``(base_url, key fingerprint)``: keys registries shared by one tenant's clients."""
        return (self.base_url, fingerprint(self._credential_identity()))

    # ------------------------------------------------------------------ credential origins
    @property
    def api_key_origin(self) -> Origin | None:
        """Where :attr:`api_key` came from (None without a key); never holds the key."""
        return self._key_origin

    @property
    def credential_cmd_origin(self) -> Origin | None:
        """Where :attr:`credential_cmd` came from (None without a command)."""
        return self._cmd_origin

    @property
    def credential_source(self) -> str:
        """Where the credential comes from, in words (``"TINKER_API_KEY"``, ``"the stored key
        file '...'"``, ``"credential command (TINKER_CREDENTIAL_CMD)"``...); no secret."""
        if self._key_origin is not None:
            return self._key_origin.describe()
        assert self._cmd_origin is not None  # validation: a key or a command
        return f"credential command ({self._cmd_origin.describe()})"

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        shown: list[str] = []
        for a in attrs.fields(Config):
            if not a.init:
                continue
            value = getattr(self, a.name)
            if a.name == "api_key":
                text = "None" if value is None else repr(mask_key(value))
            elif a.name in self.SECRET_FIELDS:
                text = "None" if value is None else repr(REDACTED)
            elif a.name == "default_headers":
                text = repr(dict.fromkeys(value, REDACTED))
            elif a.name == "proxy" and value is not None:
                text = repr(redact_url(value))
            else:
                text = repr(value)
            shown.append(f"{a.name}={text}")
        return f"Config({', '.join(shown)})"

    __str__ = __repr__
