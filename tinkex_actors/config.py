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

import inspect
import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs

from tinkex_actors import _config_values as v
from tinkex_actors import _constants as c
from tinkex_actors._config_options import (
    FrozenMap,
    attributes_section,
    declared,
    env_text,
    env_value,
    option,
)
from tinkex_actors._credentials import (
    Origin,
    default_credentials_path,
    read_stored_key,
)
from tinkex_actors._redact import fingerprint
from tinkex_actors.errors import ConfigError

__all__ = ["Config"]


def _credential_sources(
    api_key: str | None, command: str | None, env: Mapping[str, str], process_env: bool
) -> tuple[str | None, Origin | None, str | None, Origin | None]:
    """(key, its origin, command, its origin) in the official SDK's order (protocol §1.1)."""
    env_kind = "env" if process_env else "given"
    cmd_origin: Origin | None = Origin("given", "credential_cmd")
    if command is None:
        command = env_text(env, c.ENV_CREDENTIAL_CMD)
        cmd_origin = None if command is None else Origin(env_kind, c.ENV_CREDENTIAL_CMD)
    if api_key is not None:
        return api_key, Origin("given", "api_key"), command, cmd_origin
    from_env = env_text(env, c.ENV_API_KEY)
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
    """

    # Each option is declared once, here: default, check, environment variable, repr, doc.
    # Config.new (a keyword each), validation, with_, repr and the docs derive from these.
    api_key: str | None = option(
        None,
        v.api_key,
        env=c.ENV_API_KEY,
        env_kind="credential",
        env_doc="`TINKER_API_KEY`, then the stored key file",
        shown_default="required (or `credential_cmd`)",
        show=v.masked_key,
        secret=True,
        doc="the credential sent as `X-API-Key`: a static key (`tml-...`) or a JWT (`eyJ...`),"
        " exchanged for short-lived JWTs when the server asks (see Credentials). Never shown"
        " in reprs, logs, errors or telemetry (`repr` shows `'tml-***'`)",
    )
    credential_cmd: str | None = option(
        None,
        v.command,
        env=c.ENV_CREDENTIAL_CMD,
        env_kind="credential",
        show=v.masked,
        secret=True,
        doc="a shell command printing a credential (a `tml-` key or a JWT), run whenever a"
        " fresh one is needed, never at construction: for the first request when there is no"
        " `api_key`, after a rejection, and for each JWT exchange the server asks it for"
        " (`credential_default_source`). Its output is never logged; masked in `repr`",
    )
    base_url: str = option(
        c.DEFAULT_BASE_URL,
        v.base_url,
        env=c.ENV_BASE_URL,
        env_doc="`TINKER_BASE_URL` (empty = unset)",
        shown_default=f"`{c.DEFAULT_BASE_URL}`",
        blank_means_unset=True,
        doc="the server's URL, http or https, without credentials, query or fragment; a path"
        " prefix is kept (`.../services/tinker-prod`), a trailing `/` dropped, an empty"
        " string means the default",
    )
    timeout: float = option(
        c.DEFAULT_TIMEOUT,
        v.seconds,
        unit="s",
        doc="read timeout of one HTTP request, in seconds (per socket read)",
    )
    connect_timeout: float = option(
        c.DEFAULT_CONNECT_TIMEOUT, v.seconds, unit="s", doc="TCP + TLS connect timeout, in seconds"
    )
    max_retries: int = option(
        c.DEFAULT_MAX_RETRIES,
        v.retries,
        doc="transport-level retries of one call (retryable statuses, connection errors,"
        " timeouts); calls the protocol never retries pass `max_retries=0`",
    )
    tags: Sequence[str] = option(
        (),
        v.tags,
        env=c.ENV_TAGS,
        env_doc="`TINKER_TAGS` (comma-separated)",
        doc="session tags, deduplicated in order; a str is split on commas",
    )
    project_id: str | None = option(
        None, v.optional_text, env=c.ENV_PROJECT_ID, doc="project sent with `create_session`"
    )
    telemetry_enabled: bool = option(
        True,
        v.flag,
        env=c.ENV_TELEMETRY,
        env_kind="flag",
        env_doc="`TINKER_TELEMETRY` (`1/true/yes/on` or `0/false/no/off`)",
        doc="upload SDK telemetry events to the server (a variable holding anything else is a"
        " `ConfigError`)",
    )
    cf_access_client_id: str | None = option(
        None,
        v.header_text,
        env=c.ENV_CF_CLIENT_ID,
        doc="Cloudflare Access client id, sent as `CF-Access-Client-Id`; given together with"
        " `cf_access_client_secret` or not at all",
    )
    cf_access_client_secret: str | None = option(
        None,
        v.header_text,
        env=c.ENV_CF_CLIENT_SECRET,
        show=v.masked,
        secret=True,
        doc="Cloudflare Access secret, sent as `CF-Access-Client-Secret`; given together with"
        " `cf_access_client_id` or not at all; masked in `repr`",
    )
    default_headers: Mapping[str, str] = option(
        FrozenMap({}),
        v.headers,
        show=v.header_names,
        doc="extra headers sent with every request to the base URL's origin (values masked in"
        " `repr`); headers the transport manages (`X-API-Key`, `Content-Type`, `Accept`,"
        " `Host`, ...) cannot be set here",
    )
    user_metadata: Mapping[str, str] = option(
        FrozenMap({}), v.metadata, doc="`str -> str` metadata sent with `create_session`"
    )
    verify_tls: bool = option(
        True,
        v.flag,
        doc="verify server certificates; turning it off must be explicit, and the transport"
        " logs a WARNING once per tenant when it builds a pool without verification",
    )
    ca_bundle: str | None = option(
        None,
        v.ca_bundle,
        shown_default="`None` (certifi's bundle)",
        doc="a CA bundle file or directory used instead of certifi's bundle; contradicts"
        " `verify_tls=False`",
    )
    proxy: str | None = option(
        None,
        v.proxy,
        show=v.proxy_shown,
        doc="an explicit `http://` or `https://` proxy URL for every request (credentials"
        " allowed, masked in `repr`); when None, `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and"
        " `NO_PROXY` (any case) are honoured, read once per tenant when its pool is built",
    )
    http_pool_size: int = option(
        c.HTTP_POOL_SIZE, v.count, doc="keep-alive connections kept per origin"
    )
    http_pool_block: bool = option(
        c.HTTP_POOL_BLOCK,
        v.flag,
        doc="when every pooled connection is busy: wait for one (`True`) or open an extra"
        " connection that is closed after use (`False`)",
    )
    max_response_bytes: int = option(
        c.HTTP_MAX_RESPONSE_BYTES,
        v.count,
        shown_default="1 GiB",
        doc="the largest answer body read into memory; a bigger one raises"
        " `ResponseTooLargeError` (streamed downloads are not bounded)",
    )
    max_chunk_datums: int = option(
        c.CHUNK_MAX_DATUMS,
        v.count,
        doc="most datums per forward_backward chunk (the server's `client/config`"
        " announcement wins when present)",
    )
    max_chunk_tokens: int = option(
        c.CHUNK_MAX_TOKENS,
        v.count,
        doc="most tokens per forward_backward chunk (the server's `client/config`"
        " announcement wins when present)",
    )
    sample_max_inflight: int = option(
        c.SAMPLE_MAX_INFLIGHT,
        v.count,
        doc="most samples in flight per sampling client (submitted, result not yet in); the"
        " server's `sample_max_concurrent_requests` lowers it. Samples beyond it wait in a"
        " queue that holds no thread",
    )
    sample_max_inflight_throttled: int = option(
        c.SAMPLE_MAX_INFLIGHT_THROTTLED,
        v.count,
        doc="most sample submissions at once per API key during the throttle window (10 s)"
        " after a 429",
    )
    sample_max_queued: int | None = option(
        None,
        v.optional_count,
        doc="most samples waiting for an in-flight slot per sampling client; None: unbounded",
    )
    sample_queue_full: str = option(
        "raise",
        v.queue_full,
        doc='what `sample()` does when that queue is full: `"raise"` `QueueFullError`, or'
        ' `"wait"` (block the caller until there is room, within the sample\'s `timeout`)',
    )
    sample_dispatch_threads: int = option(
        c.SAMPLE_DISPATCH_THREADS,
        v.count,
        doc="threads per tenant that submit samples and fetch their results",
    )
    poll_threads: int = option(
        c.POLL_THREADS,
        v.count,
        doc="threads per tenant for single long polls of samples, used only with servers"
        " that do not offer batched polling (`retrieve_futures`)",
    )
    heartbeat_interval: float = option(
        c.HEARTBEAT_INTERVAL, v.seconds, unit="s", doc="seconds between session heartbeats"
    )
    poll_timeout: float = option(
        c.RETRIEVE_FUTURE_TIMEOUT,
        v.seconds,
        unit="s",
        doc="read timeout of a `retrieve_future` long poll, in seconds",
    )
    _tenant_id: str = attrs.field(init=False, eq=False, hash=False)
    # Where api_key / credential_cmd came from (Config.new records it; not part of equality).
    _key_origin: Origin | None = attrs.field(init=False, eq=False, hash=False)
    _cmd_origin: Origin | None = attrs.field(init=False, eq=False, hash=False)

    #: Options whose values are secrets (masked in ``repr``); set from the declarations.
    SECRET_FIELDS: ClassVar[frozenset[str]]

    def __attrs_post_init__(self) -> None:
        # Validate and normalize every option once (frozen: assign through object), then
        # the rules that involve two options.
        for field, spec in declared(Config):
            object.__setattr__(self, field.name, spec.check(field.name, getattr(self, field.name)))
        if self.api_key is None and self.credential_cmd is None:
            raise ConfigError(
                "api_key",
                f"no credential: pass api_key= or credential_cmd=, set {c.ENV_API_KEY} or "
                f"{c.ENV_CREDENTIAL_CMD}, or store a key with `tinker auth login` "
                f"(~/{c.CREDENTIALS_FILE}); static keys start with {c.API_KEY_PREFIX!r}, "
                f"JWTs with {c.JWT_PREFIX!r}",
            )
        if (self.cf_access_client_id is None) != (self.cf_access_client_secret is None):
            missing = (
                "cf_access_client_secret"
                if self.cf_access_client_secret is None
                else "cf_access_client_id"
            )
            raise ConfigError(missing, "Cloudflare Access needs both the client id and secret")
        if self.ca_bundle is not None and not self.verify_tls:
            raise ConfigError("ca_bundle", "is set but verify_tls is False; choose one")
        put = object.__setattr__
        put(self, "_tenant_id", fingerprint(f"{self.base_url}\n{self._credential_identity()}"))
        key_given, cmd_given = Origin("given", "api_key"), Origin("given", "credential_cmd")
        put(self, "_key_origin", None if self.api_key is None else key_given)
        put(self, "_cmd_origin", None if self.credential_cmd is None else cmd_given)

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
        read once here and never again) supplies the options that name a variable (see the
        Attributes above, and ``docs/configuration.md``).

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
        # The keywords above are the options, one each (a test holds them to the
        # declarations), typed for callers; read them back by name.
        explicit: dict[str, Any] = {k: v for k, v in locals().items() if k not in ("cls", "env")}
        source: Mapping[str, str] = os.environ if env is None else env
        given: dict[str, Any] = {}
        for field, spec in declared(cls):
            value = explicit[field.name]
            if spec.env_kind == "credential":
                continue
            if value is None or (spec.blank_means_unset and value == ""):
                value = env_value(spec, field.name, source)
            if value is not None:
                given[field.name] = value
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
        known = {field.name for field, _ in declared(Config)}
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
        shown = [
            f"{field.name}={'None' if value is None else spec.show(value)}"
            for field, spec in declared(Config)
            for value in (getattr(self, field.name),)
        ]
        return f"Config({', '.join(shown)})"

    __str__ = __repr__


Config.SECRET_FIELDS = frozenset(field.name for field, spec in declared(Config) if spec.secret)
# The reference of every option, derived from the declarations (pydoc, docs/api).
Config.__doc__ = f"{inspect.cleandoc(Config.__doc__ or '')}\n\n{attributes_section(Config)}\n"
