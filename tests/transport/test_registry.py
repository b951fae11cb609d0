"""One transport (one pool) per tenant Config, reference-counted."""

from __future__ import annotations

import pytest

from tinkex_actors import errors
from tinkex_actors.config import Config
from tinkex_actors.transport import TransportRegistry, acquire_transport, release_transport

from .conftest import API_KEY


def test_equal_configs_share_a_transport_and_the_last_release_closes_it() -> None:
    registry = TransportRegistry()
    a = registry.acquire(Config(api_key=API_KEY, base_url="http://tenant.test"))
    b = registry.acquire(Config(api_key=API_KEY, base_url="http://tenant.test/"))
    assert a is b
    assert registry.holders(a.config) == 2
    registry.release(a)
    assert not a.closed
    registry.release(b)
    assert a.closed
    assert len(registry) == 0
    registry.release(a)  # a double release is harmless
    c = registry.acquire(a.config)
    assert c is not a
    assert not c.closed
    registry.close_all()
    assert c.closed


def test_different_configs_are_isolated() -> None:
    registry = TransportRegistry()
    base = Config(api_key=API_KEY, base_url="http://tenant.test")
    other_key = registry.acquire(base.with_(api_key="tml-another-tenant"))
    other_timeout = registry.acquire(base.with_(timeout=5))
    first = registry.acquire(base)
    assert len({id(first), id(other_key), id(other_timeout)}) == 3
    assert first.config.tenant_key != other_key.config.tenant_key
    assert first.config.tenant_key == other_timeout.config.tenant_key
    registry.close_all()
    assert first.closed
    assert other_key.closed
    assert other_timeout.closed


def test_process_wide_registry_helpers() -> None:
    config = Config(api_key=API_KEY, base_url="http://shared.test")
    first = acquire_transport(config)
    second = acquire_transport(config)
    assert first is second
    release_transport(first)
    release_transport(second)
    assert first.closed


def test_acquire_rejects_non_configs() -> None:
    with pytest.raises(errors.ValidationError) as info:
        TransportRegistry().acquire({"api_key": API_KEY})  # type: ignore[arg-type]
    assert info.value.field == "config"
