"""Sampling from other processes: pickled clients, handles, clients inherited through fork.

The parent talks to the shared null server through a recording proxy, and the handle names the
proxy, so every ``asample`` of the parent and of its children passes through it: the test reads
the ``seq_id`` s off the wire. Clones number theirs from ``clone_id * 1e9``; none may collide.
Children run the real SDK (``tests/server/_handle_workers.py``) and report plain data back.
"""

from __future__ import annotations

import base64
import concurrent.futures
import gc
import json
import multiprocessing
import pickle
import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import tinker
from _servers import ServerHandle, session_server
from reliability._proxy import FaultProxy
from tinker import types as official

from tinkex_actors import SamplingClient, ServiceClient
from tinkex_actors import _constants as c
from tinkex_actors.config import Config
from tinkex_actors.errors import (
    ClientClosedError,
    ConfigError,
    NotFoundError,
    ValidationError,
)

from . import _handle_workers as workers
from ._helpers import MODEL

CHILDREN = 4
JOIN_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def proxy(null_server: ServerHandle) -> Iterator[FaultProxy]:
    with FaultProxy(null_server.port) as started:
        yield started


@pytest.fixture(scope="module")
def other_server() -> Iterator[ServerHandle]:
    with session_server("null") as handle:
        yield handle


@pytest.fixture
def env_key(null_server: ServerHandle, monkeypatch: pytest.MonkeyPatch) -> str:
    """The tenant's key in TINKER_API_KEY (children inherit it), no credential command."""
    monkeypatch.setenv("TINKER_API_KEY", null_server.api_key)
    monkeypatch.delenv("TINKER_CREDENTIAL_CMD", raising=False)
    return null_server.api_key


def _config(proxy: FaultProxy) -> Config:
    return Config.new(base_url=proxy.url, telemetry_enabled=False)


def _expected(sampler: SamplingClient) -> list[int]:
    result = sampler.sample(workers.PROMPT, workers.PARAMS).result(workers.TIMEOUT)
    return list(result.sequences[0].tokens)


def _seq_ids(proxy: FaultProxy, sampler_id: str) -> list[int]:
    seen: list[int] = []
    for relayed in proxy.relayed_to("/asample"):
        body = orjson.loads(relayed.request.decoded)
        if body.get("sampling_session_id") == sampler_id:
            seen.append(body["seq_id"])
    return seen


def _run_children(method: str, target: Any, args: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    context = multiprocessing.get_context(method)
    queue = context.Queue()
    processes = [context.Process(target=target, args=(*a, queue)) for a in args]
    try:
        for process in processes:
            process.start()
        reports = [queue.get(timeout=JOIN_TIMEOUT) for _ in processes]
        for process in processes:
            process.join(JOIN_TIMEOUT)
        assert [p.exitcode for p in processes] == [0] * len(processes)
        return reports
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(10)
        queue.close()
        queue.join_thread()


def _check_clones(
    reports: list[dict[str, Any]], expected: list[int], samples: int
) -> dict[int, dict[str, Any]]:
    errors = [r for r in reports if "error" in r]
    assert not errors, errors
    for report in reports:
        assert report["tokens"] == [expected] * samples
    clones = {r["clone_id"]: r for r in reports}
    assert len(clones) == len(reports)  # every restored client is a clone of its own
    assert all(1 <= clone <= c.SAMPLE_CLONE_ID_MAX for clone in clones)
    return clones


def _check_wire(
    proxy: FaultProxy, sampler_id: str, clones: set[int], samples: int, originals: int
) -> None:
    seq_ids = _seq_ids(proxy, sampler_id)
    assert len(seq_ids) == len(set(seq_ids))  # never one seq_id twice
    by_clone: dict[int, list[int]] = defaultdict(list)
    for seq in seq_ids:
        by_clone[seq // c.SAMPLE_SEQ_ID_STRIDE].append(seq % c.SAMPLE_SEQ_ID_STRIDE)
    assert set(by_clone) == {0, *clones}
    assert sorted(by_clone[0]) == list(range(originals))
    for clone in clones:
        assert sorted(by_clone[clone]) == list(range(samples))


# ---------------------------------------------------------------------------- processes
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_four_processes_sample_one_sampler(proxy: FaultProxy, env_key: str, method: str) -> None:
    samples = 3
    with ServiceClient(_config(proxy)) as service:
        sampler = service.create_sampling_client(base_model=MODEL)
        expected = _expected(sampler)
        # fork: each child inherits the client and restores it on its first sample;
        # spawn: each child unpickles it (the pickle names TINKER_API_KEY, not the key).
        assert env_key.encode() not in pickle.dumps(sampler)
        reports = _run_children(method, workers.sample_into, [(sampler, samples)] * CHILDREN)
        assert _expected(sampler) == expected  # the original still works
    clones = _check_clones(reports, expected, samples)
    assert len({r["pid"] for r in reports}) == CHILDREN
    _check_wire(proxy, sampler.sampler_id, set(clones), samples, originals=2)


def test_a_process_pool_takes_clients_and_handles(proxy: FaultProxy, env_key: str) -> None:
    samples = 2
    with ServiceClient(_config(proxy)) as service:
        sampler = service.create_sampling_client(base_model=MODEL)
        expected = _expected(sampler)
        handle = sampler.get_sampler_handle()
        assert env_key not in base64.urlsafe_b64decode(handle).decode()
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
            tasks = [pool.submit(workers.sample_task, sampler, samples) for _ in range(2)]
            tasks += [
                pool.submit(workers.sample_from_handle, handle, None, samples) for _ in range(2)
            ]
            reports = [task.result(JOIN_TIMEOUT) for task in tasks]
    clones = _check_clones(reports, expected, samples)
    _check_wire(proxy, sampler.sampler_id, set(clones), samples, originals=1)


def test_a_handle_from_an_ended_session_fails_clearly_in_the_child(
    proxy: FaultProxy, env_key: str
) -> None:
    with ServiceClient(_config(proxy)) as service:
        sampler = service.create_sampling_client(base_model=MODEL)
        handle = sampler.get_sampler_handle()
        payload = pickle.dumps(sampler)
    in_child = _run_children("spawn", workers.unpickle_into, [(payload,)])
    reports = [*in_child, workers.sample_from_handle(handle, None, 1)]
    for report in reports:
        assert report["error"] == "GoneError", report
        assert "has ended" in report["message"]
        assert sampler.sampler_id in report["message"]


# ---------------------------------------------------------------------------- in one process
def test_clones_share_one_tree_that_closes_with_the_last(proxy: FaultProxy, env_key: str) -> None:
    with ServiceClient(_config(proxy)) as service:
        sampler = service.create_sampling_client(base_model=MODEL)
        expected = _expected(sampler)
        before = {t.ident for t in threading.enumerate()}
        first = pickle.loads(pickle.dumps(sampler))
        second = SamplingClient.from_sampler_handle(sampler.get_sampler_handle())
        assert first.clone_id != second.clone_id
        assert {first.clone_id, second.clone_id}.isdisjoint({0, sampler.clone_id})
        assert _expected(first) == _expected(second) == expected
        assert first.base_model == MODEL
        heartbeats = [
            t for t in threading.enumerate()
            if t.ident not in before and t.name.startswith("tinkex-heartbeat")
        ]  # fmt: skip
        assert len(heartbeats) == 1  # one tree for both clones: one heartbeat
        first.close()
        assert heartbeats[0].is_alive()
        assert _expected(second) == expected
        del second  # dropped, not closed: its tree closes from the collector
        gc.collect()
        heartbeats[0].join(c.ACTOR_STOP_TIMEOUT + c.HEARTBEAT_TIMEOUT)
        assert not heartbeats[0].is_alive()
        assert _expected(sampler) == expected  # the session itself goes on


def test_pickles_carry_the_key_source_not_the_key(
    proxy: FaultProxy, env_key: str, null_server: ServerHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ServiceClient(_config(proxy)) as service:
        sampler = service.create_sampling_client(base_model=MODEL)
        payload = pickle.dumps(sampler)
        assert env_key.encode() not in payload
        monkeypatch.setenv("TINKER_API_KEY", null_server.other_api_key)
        with pytest.raises(ConfigError) as other:
            pickle.loads(payload)
        monkeypatch.delenv("TINKER_API_KEY")
        with pytest.raises(ConfigError) as unset:
            pickle.loads(payload)
        explicit = Config(api_key=env_key, base_url=proxy.url, telemetry_enabled=False)
        with ServiceClient(explicit) as keyed:
            given = keyed.create_sampling_client(base_model=MODEL)
            assert env_key.encode() in pickle.dumps(given)  # passed as itself: no other source
    assert "holds another key" in str(other.value)
    assert "holds none" in str(unset.value)
    for error in (other.value, unset.value):
        assert "TINKER_API_KEY" in str(error)
        assert env_key not in str(error)
        assert null_server.other_api_key not in str(error)


def test_bad_handles_fail_clearly(
    proxy: FaultProxy, env_key: str, null_server: ServerHandle, other_server: ServerHandle
) -> None:
    with ServiceClient(_config(proxy)) as service:
        sampler = service.create_sampling_client(base_model=MODEL)
        handle = sampler.get_sampler_handle()
        fields = json.loads(base64.urlsafe_b64decode(handle))

        def variant(**changes: Any) -> str:
            changed = json.loads(json.dumps(fields))
            changed["holder"].update(changes.pop("holder", {}))
            changed.update(changes)
            return base64.urlsafe_b64encode(json.dumps(changed).encode()).decode()

        for bad, says in (
            ("not a handle", "not a sampler handle"),
            (base64.urlsafe_b64encode(b"[1]").decode(), "no 'holder' object"),
            (variant(session_id=None), "'session_id'"),
            (123, "expected the str"),
        ):
            with pytest.raises(ValidationError) as invalid:
                SamplingClient.from_sampler_handle(bad)  # type: ignore[arg-type]
            assert invalid.value.field == "handle"
            assert says in str(invalid.value)
        elsewhere = variant(holder={"base_url": other_server.base_url})
        with pytest.raises(NotFoundError) as moved:
            SamplingClient.from_sampler_handle(elsewhere, api_key=other_server.api_key)
        with pytest.raises(NotFoundError) as foreign:
            SamplingClient.from_sampler_handle(handle, api_key=null_server.other_api_key)
        unknown = variant(sampling_session_id=fields["sampling_session_id"] + "9")
        with pytest.raises(NotFoundError) as missing:
            SamplingClient.from_sampler_handle(unknown)
        with pytest.raises(ValidationError):
            SamplingClient.from_sampler_handle(handle, api_key=env_key, config=_config(proxy))
        sampler.close()
        with pytest.raises(ClientClosedError):
            sampler.get_sampler_handle()
        with pytest.raises(ClientClosedError):
            pickle.dumps(sampler)
    assert f"does not know session {fields['session_id']}" in str(moved.value)
    assert other_server.base_url in str(moved.value)
    assert "another API key" in str(foreign.value)
    assert "does not know sampler" in str(missing.value)


def test_handles_travel_between_this_sdk_and_the_official_one(
    null_server: ServerHandle, env_key: str
) -> None:
    config = Config(api_key=env_key, base_url=null_server.base_url, telemetry_enabled=False)
    prompt = official.ModelInput.from_ints(workers.PROMPT.to_ints())
    params = official.SamplingParams(max_tokens=5, seed=11)
    with ServiceClient(config) as service:
        sampler = service.create_sampling_client(base_model=MODEL)
        expected = _expected(sampler)
        theirs = tinker.SamplingClient.from_sampler_handle(sampler.get_sampler_handle())
        answer = theirs.sample(prompt=prompt, num_samples=1, sampling_params=params).result()
        assert list(answer.sequences[0].tokens) == expected
        mine = SamplingClient.from_sampler_handle(theirs.get_sampler_handle(), config=config)
        try:
            assert _expected(mine) == expected
            assert mine.clone_id != 0
        finally:
            mine.close()
