"""Fault policies for the fault proxy: what to inject, decided per exchange.

A policy sees an :class:`Exchange` (the request plus its stable identity) and returns a
:class:`Fault` or None. :class:`RandomFaults` decides with a generator seeded by its seed and
the exchange's identity, so a run's faults reproduce whatever the thread timing;
:class:`Script` injects given faults into the exchanges that match.
"""

from __future__ import annotations

import enum
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "RETRIEVE",
    "Exchange",
    "Fault",
    "FaultKind",
    "NoFaults",
    "Policy",
    "RandomFaults",
    "Rule",
    "Script",
    "menu",
]

RETRIEVE = "/api/v1/retrieve_future"


class FaultKind(enum.StrEnum):
    """What the proxy does instead of (or on top of) relaying an exchange."""

    DROP_REQUEST = "drop_request"
    DROP_RESPONSE = "drop_response"
    STATUS = "status"
    STATUS_AFTER = "status_after"
    DELAY = "delay"
    TRY_AGAIN = "try_again"


@dataclass(frozen=True)
class Fault:
    """One injected fault (see the module docstring)."""

    kind: FaultKind
    status: int = 503
    retry_after: str | None = None
    retry_after_ms: str | None = None
    delay: float = 0.0
    stretch: int = 1
    queue_state: str = "paused_capacity"
    #: DROP_REQUEST: reset (RST) the connection; False closes it cleanly (FIN), which a client
    #: on a reused keep-alive connection cannot tell from the server closing it while idle.
    reset: bool = True

    @property
    def label(self) -> str:
        """A short name for counting: ``status:503+retry-after``, ``drop_response``, ..."""
        if self.kind in (FaultKind.STATUS, FaultKind.STATUS_AFTER):
            hint = "+retry-after" if self.retry_after else ""
            hint += "+retry-after-ms" if self.retry_after_ms else ""
            return f"{self.kind.value}:{self.status}{hint}"
        if self.kind is FaultKind.DROP_REQUEST and not self.reset:
            return f"{self.kind.value}:close"
        return self.kind.value


@dataclass(frozen=True)
class Exchange:
    """What a policy sees of a request.

    Attributes:
        method / path: the request line (path without query).
        headers: lower-case names.
        body: the decoded request body.
        ordinal: the logical request's index among those of its path (from 0).
        attempt: ``x-stainless-retry-count`` (submissions) or the poll iteration.
        request_id: the polled future (retrieve_future only).
    """

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    ordinal: int
    attempt: int
    request_id: str | None = None

    @property
    def identity(self) -> str:
        """The stable name a seeded policy hashes."""
        return f"{self.method} {self.path} #{self.ordinal} try {self.attempt}"


class Policy(Protocol):
    """Decides the fault of an exchange (None: relay it untouched)."""

    def decide(self, exchange: Exchange) -> Fault | None: ...


class NoFaults:
    """Relay everything."""

    def decide(self, exchange: Exchange) -> Fault | None:
        return None


RATE_LIMITED = "paused_rate_limit"


def menu() -> list[tuple[Fault, float]]:
    """Every fault kind with a weight: the mix the exactly-once scenario draws from."""
    return [
        (Fault(FaultKind.DROP_REQUEST), 2.0),
        (Fault(FaultKind.DROP_REQUEST, reset=False), 1.0),
        (Fault(FaultKind.DROP_RESPONSE), 2.0),
        (Fault(FaultKind.STATUS, 500), 1.0),
        (Fault(FaultKind.STATUS, 502), 1.0),
        (Fault(FaultKind.STATUS, 503, retry_after="1"), 1.0),
        (Fault(FaultKind.STATUS, 503), 1.0),
        (Fault(FaultKind.STATUS, 429, retry_after="1"), 1.0),
        (Fault(FaultKind.STATUS, 429, retry_after_ms="20"), 1.0),
        (Fault(FaultKind.STATUS, 429), 1.0),
        (Fault(FaultKind.STATUS_AFTER, 500), 1.5),
        (Fault(FaultKind.STATUS_AFTER, 503, retry_after="0"), 1.0),
        (Fault(FaultKind.DELAY, delay=0.05), 1.0),
        (Fault(FaultKind.DELAY, delay=0.25), 0.5),
        (Fault(FaultKind.TRY_AGAIN, stretch=40), 1.0),
        (Fault(FaultKind.TRY_AGAIN, stretch=100, delay=0.002, queue_state=RATE_LIMITED), 0.5),
    ]


class RandomFaults:
    """Faults ``rate`` of the exchanges matching ``where``, drawn from ``choices``.

    Each decision comes from a generator seeded with ``seed`` and the exchange's identity, so
    the same run gets the same faults whatever the thread timing. ``TRY_AGAIN`` applies only
    to ``retrieve_future``; another fault is drawn for other paths.
    """

    def __init__(
        self,
        seed: int,
        rate: float,
        choices: Sequence[tuple[Fault, float]] | None = None,
        where: Callable[[Exchange], bool] | None = None,
    ) -> None:
        self.seed = seed
        self.rate = rate
        self.choices = list(choices or menu())
        self.where = where

    def decide(self, exchange: Exchange) -> Fault | None:
        if self.where is not None and not self.where(exchange):
            return None
        rng = random.Random(f"{self.seed}|{exchange.identity}")
        if rng.random() >= self.rate:
            return None
        usable = [
            (fault, weight)
            for fault, weight in self.choices
            if fault.kind is not FaultKind.TRY_AGAIN or exchange.path == RETRIEVE
        ]
        if not usable:
            return None
        faults, weights = zip(*usable, strict=True)
        return rng.choices(faults, weights)[0]


@dataclass
class Rule:
    """A scripted fault: the next ``times`` exchanges matching ``match`` get ``fault``."""

    match: Callable[[Exchange], bool]
    fault: Fault
    times: int = 1


class Script:
    """Scripted faults: the first rule that matches and has uses left (thread-safe)."""

    def __init__(self, *rules: Rule) -> None:
        self.rules = list(rules)
        self._lock = threading.Lock()

    def decide(self, exchange: Exchange) -> Fault | None:
        with self._lock:
            for rule in self.rules:
                if rule.times > 0 and rule.match(exchange):
                    rule.times -= 1
                    return rule.fault
        return None

    @property
    def exhausted(self) -> bool:
        """Whether every rule was used up."""
        with self._lock:
            return all(rule.times <= 0 for rule in self.rules)
