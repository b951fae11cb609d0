"""The embedded server's settings (what the command-line flags set)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tinkex_actors._constants import (
    CHECKPOINT_TTL_MIN,
    SERVER_ARCHIVE_URL_TTL,
    SERVER_DEFAULT_HOST,
    SERVER_DEFAULT_PORT,
    SERVER_DELIVERED_FUTURE_TTL,
    SERVER_EXPIRY_SWEEP_INTERVAL,
    SERVER_FUTURE_TTL,
    SERVER_MAX_BODY_BYTES,
    SERVER_POLL_HOLD,
    SERVER_SEQ_GAP_TIMEOUT,
    SERVER_WORKERS,
)
from tinkex_actors.errors import ConfigError

__all__ = ["DEFAULT_CLIENT_CONFIG", "ServerSettings"]

#: Synchronous endpoints that need the engine wait this long for its warm-up, then answer 503.
ENGINE_WAIT_TIMEOUT = 50.0
#: Default lifetime of the JWTs ``auth/token`` issues with ``--jwt-auth`` (seconds).
JWT_DEFAULT_TTL = 3600
#: A request naming a model saved at the last shutdown, made while the engine still warms up,
#: is answered 503 with this ``retry-after`` (seconds): the SDKs retry 5xx ten times.
RESTORE_RETRY_AFTER = 5.0
#: ``client/config`` flag that makes the official SDK exchange its key for JWTs.
JWT_CLIENT_FLAG = "pjwt_auth_enabled"

#: Flags ``client/config`` announces unless ``--client-config`` overrides them: the server
#: serves ``retrieve_futures``, so official 0.38 clients poll one batch per sampling session.
DEFAULT_CLIENT_CONFIG: Mapping[str, Any] = MappingProxyType({"sample_use_retrieve_futures": True})


#: Latencies and delays are milliseconds in 0..10 minutes.
_MAX_DELAY_MS = 600_000.0
_DELAY_RANGE = f"expected 0 <= ms <= {_MAX_DELAY_MS:g}"


def _delay_ok(value: float) -> bool:
    return math.isfinite(value) and 0 <= value <= _MAX_DELAY_MS


@dataclass(frozen=True)
class ServerSettings:
    """Validated server settings.

    Attributes:
        data_dir: SQLite database, checkpoints and the archive secret live here.
        api_keys: accepted keys (``tml-...``); never shown in the repr.
        engine: ``"torch"`` or ``"null"``.
        models: extra ``name -> local Hugging Face directory`` (torch engine).
        simulate_ms: null engine's simulated work per forward_backward / optim_step.
        poll_hold_seconds: how long retrieve_future holds a pending future.
        max_body_bytes: request body limit (413 above).
        threads: engine compute threads (0: engine default).
        workers: worker threads running engine calls.
        seq_gap_timeout: how long a missing seq_id holds a model's later requests.
        archive_url_ttl: lifetime of signed archive URLs (seconds).
        min_ttl_seconds: smallest checkpoint TTL accepted.
        expiry_sweep_interval: how often expired checkpoints and futures are swept.
        future_ttl: how long finished futures stay retrievable.
        delivered_future_ttl: how long a future stays retrievable after its result was sent.
        client_config: flags answered to ``client/config`` (e.g. chunk limits), on top of
            :data:`DEFAULT_CLIENT_CONFIG` (a flag given here replaces the default's).
        rate_limits: ``asample`` requests per second allowed to an API key (one of
            ``api_keys``); keys not listed are not limited. Never shown in the repr.
        jwt_auth: ``auth/token`` exchanges a key for a signed JWT (HS256) that every endpoint
            accepts in ``X-API-Key``; ``client/config`` announces ``pjwt_auth_enabled``.
        jwt_ttl: lifetime of those JWTs (seconds).
        session_timeout: a session without a heartbeat for this long expires (its live
            models and samplers are released; calls naming it get 410); 0: never.
        test_hooks: serve the ``/api/v1/_test/...`` routes (expire a session now, rotate
            the JWT secret, auth counters); for tests only.
        sample_latency_ms: latency model: each asample's result is visible no sooner than
            this long after it was queued (the engine work itself is unchanged).
        train_latency_ms: the same for forward_backward, forward and optim_step.
        network_delay_ms: every HTTP answer is held this long (an emulated network hop).
        debug_stats: serve the sampling counters at ``GET /_debug/stats`` (benchmarks).
    """

    data_dir: Path
    api_keys: tuple[str, ...] = field(repr=False)
    host: str = SERVER_DEFAULT_HOST
    port: int = SERVER_DEFAULT_PORT
    engine: str = "torch"
    models: Mapping[str, Path] = field(default_factory=dict)
    simulate_ms: float = 0.0
    poll_hold_seconds: float = SERVER_POLL_HOLD
    max_body_bytes: int = SERVER_MAX_BODY_BYTES
    threads: int = 0
    workers: int = SERVER_WORKERS
    seq_gap_timeout: float = SERVER_SEQ_GAP_TIMEOUT
    archive_url_ttl: int = SERVER_ARCHIVE_URL_TTL
    min_ttl_seconds: int = CHECKPOINT_TTL_MIN
    expiry_sweep_interval: float = SERVER_EXPIRY_SWEEP_INTERVAL
    future_ttl: float = SERVER_FUTURE_TTL
    delivered_future_ttl: float = SERVER_DELIVERED_FUTURE_TTL
    client_config: Mapping[str, Any] = field(default_factory=dict)
    rate_limits: Mapping[str, float] = field(default_factory=dict, repr=False)
    jwt_auth: bool = False
    jwt_ttl: int = JWT_DEFAULT_TTL
    session_timeout: float = 0.0
    test_hooks: bool = False
    sample_latency_ms: float = 0.0
    train_latency_ms: float = 0.0
    network_delay_ms: float = 0.0
    debug_stats: bool = False

    def __post_init__(self) -> None:
        # A frozen dataclass: the merged mapping replaces the given one once, here.
        object.__setattr__(self, "client_config", {**DEFAULT_CLIENT_CONFIG, **self.client_config})
        checks: list[tuple[str, bool, str]] = [
            ("port", 0 <= self.port <= 65535, "expected 0..65535"),
            ("simulate_ms", self.simulate_ms >= 0, "expected >= 0"),
            ("poll_hold_seconds", 0 < self.poll_hold_seconds < 45, "expected 0 < s < 45"),
            ("max_body_bytes", self.max_body_bytes >= 1024, "expected >= 1024"),
            ("threads", self.threads >= 0, "expected >= 0"),
            ("workers", self.workers >= 1, "expected >= 1"),
            ("seq_gap_timeout", self.seq_gap_timeout > 0, "expected > 0"),
            ("archive_url_ttl", self.archive_url_ttl >= 1, "expected >= 1"),
            ("min_ttl_seconds", self.min_ttl_seconds >= 1, "expected >= 1"),
            ("expiry_sweep_interval", self.expiry_sweep_interval > 0, "expected > 0"),
            ("future_ttl", self.future_ttl > 0, "expected > 0"),
            ("delivered_future_ttl", self.delivered_future_ttl > 0, "expected > 0"),
            ("jwt_ttl", self.jwt_ttl >= 1, "expected >= 1"),
            (
                "session_timeout",
                math.isfinite(self.session_timeout) and self.session_timeout >= 0,
                "expected >= 0 (0: sessions never expire)",
            ),
            ("sample_latency_ms", _delay_ok(self.sample_latency_ms), _DELAY_RANGE),
            ("train_latency_ms", _delay_ok(self.train_latency_ms), _DELAY_RANGE),
            ("network_delay_ms", _delay_ok(self.network_delay_ms), _DELAY_RANGE),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(name, f"{expected}, got {getattr(self, name)!r}")
        for key, rate in self.rate_limits.items():
            # The message names the key's position, never the key itself.
            if key not in self.api_keys:
                raise ConfigError("rate_limits", "a --rate-limit key is not one of the API keys")
            if not (math.isfinite(rate) and rate > 0):
                position = self.api_keys.index(key) + 1
                raise ConfigError(
                    "rate_limits", f"API key #{position}: expected a rate > 0, got {rate!r}"
                )
        if self.client_config.get(JWT_CLIENT_FLAG) and not self.jwt_auth:
            raise ConfigError(
                "client_config", f"{JWT_CLIENT_FLAG} needs the server's JWT auth (--jwt-auth)"
            )
        for name, path in self.models.items():
            if not Path(path).is_dir():
                raise ConfigError("models", f"{name}: {path} is not a directory")
