"""One fault of each kind on every endpoint the SDK calls: the SDK rides it out.

For each fault kind, a policy faults the first attempt of every route the SDK uses (every
submission, every first poll of every future, the heartbeat, telemetry, REST, the archive
download) while one ServiceClient runs through the whole API against the null server: session
set-up, training, both kinds of saves, sampling clients from a path and from an unnamed save,
sampling, restoring from a checkpoint, REST calls and a checkpoint download. Every call must
succeed (a retry absorbs one fault), except a download cut mid-body, which fails with a typed
error and succeeds when run again.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from _servers import ServerHandle

from tinkex_actors import Config, ServiceClient, types
from tinkex_actors.errors import CheckpointDownloadError, TinkexError

from ._faults import RETRIEVE, Exchange, Fault, FaultKind
from ._training import ADAM, MODEL, WAIT, batch, checkpoint_files
from .conftest import MakeProxy

#: Faults that leave the exchange's outcome to a retry (one of each status flavour).
KINDS = [
    Fault(FaultKind.DROP_REQUEST),
    Fault(FaultKind.DROP_REQUEST, reset=False),
    Fault(FaultKind.DROP_RESPONSE),
    Fault(FaultKind.STATUS, 500),
    Fault(FaultKind.STATUS, 503, retry_after="1"),
    Fault(FaultKind.STATUS, 429, retry_after_ms="10"),
    Fault(FaultKind.STATUS_AFTER, 502),
    Fault(FaultKind.DELAY, delay=0.1),
    Fault(FaultKind.TRY_AGAIN, stretch=5),
]
_IDS = re.compile(r"(session-[0-9a-f]+)(:(train|sample):\d+)?|[0-9a-f]{16,}")


def route(path: str) -> str:
    """``path`` with ids replaced, so every call of one endpoint has the same route."""
    return _IDS.sub("{id}", path.split("?", 1)[0])


class FirstOfEachRoute:
    """Faults the first attempt of each route once (and the first poll of every future)."""

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.faulted: set[str] = set()
        self._lock = threading.Lock()

    def decide(self, exchange: Exchange) -> Fault | None:
        if exchange.attempt != 0:
            return None
        if self.fault.kind is FaultKind.TRY_AGAIN and exchange.path != RETRIEVE:
            return None
        key = route(exchange.path)
        if exchange.path == RETRIEVE:
            key = f"{key} #{exchange.ordinal}"
        with self._lock:
            if key in self.faulted:
                return None
            self.faulted.add(key)
        return self.fault


def run_everything(service: ServiceClient, tmp: Path, errors: list[TinkexError]) -> None:
    """Every public call of the SDK once, each result awaited with a bound."""
    assert service.get_server_capabilities(timeout=WAIT).supported_models
    training = service.create_lora_training_client(
        MODEL, types.LoraConfig(rank=2, seed=5), timeout=WAIT
    )
    assert training.get_info().model_id == training.model_id
    output = training.forward_backward(batch(0), "cross_entropy").result(WAIT)
    assert output.metrics["loss:sum"] > 0
    training.optim_step(ADAM).result(WAIT)
    assert training.forward(batch(1), "cross_entropy").result(WAIT).loss_fn_outputs
    state = training.save_state("state").result(WAIT).path
    weights = training.save_weights_for_sampler("weights").result(WAIT).path
    assert weights is not None
    params = types.SamplingParams(max_tokens=4, seed=1)
    prompt = types.ModelInput.from_ints([5, 6, 7])
    unnamed = training.save_weights_and_get_sampling_client(timeout=WAIT)
    assert len(unnamed.sample(prompt, params, num_samples=2).result(WAIT).sequences) == 2
    named = service.create_sampling_client(model_path=weights, timeout=WAIT)
    assert named.sample(prompt, params).result(WAIT).sequences[0].tokens
    assert len(named.compute_logprobs(prompt).result(WAIT)) == 3
    restored = service.create_training_client_from_state_with_optimizer(state, timeout=WAIT)
    restored.forward_backward(batch(2), "cross_entropy").result(WAIT)
    restored.unload_model().result(WAIT)
    rest = service.create_rest_client()
    try:
        assert rest.get_training_run(training.model_id).training_run_id == training.model_id
        listed = rest.list_checkpoints(training.model_id)
        assert {c.tinker_path for c in listed.checkpoints} >= {state, weights}
        files = checkpoint_files(rest, state, tmp, on_error=errors.append)
        assert "adapter_model.safetensors" in files
        assert rest.get_weights_info_by_tinker_path(state).base_model == MODEL
        assert rest.get_session(service.session_id).training_run_ids
        rest.publish_checkpoint_from_tinker_path(weights)
        rest.unpublish_checkpoint_from_tinker_path(weights)
        rest.set_checkpoint_ttl_from_tinker_path(weights, 3600)
        rest.delete_checkpoint_by_tinker_path(weights)
        left = {c.tinker_path for c in rest.list_checkpoints(training.model_id).checkpoints}
        assert weights not in left
    finally:
        rest.close()


@pytest.mark.parametrize("fault", KINDS, ids=[f.label for f in KINDS])
def test_one_fault_on_every_endpoint_is_ridden_out(
    null_server: ServerHandle,
    make_proxy: MakeProxy,
    fast_sleep: Callable[[float], None],
    fault: Fault,
    tmp_path: Path,
) -> None:
    policy = FirstOfEachRoute(fault)
    proxy = make_proxy(null_server.port, policy)
    config = Config(api_key=null_server.api_key, base_url=proxy.url, heartbeat_interval=0.1)
    errors: list[TinkexError] = []
    with ServiceClient(config, sleep=fast_sleep) as service:
        run_everything(service, tmp_path, errors)
    routes = {r.split(" #")[0] for r in policy.faulted}
    if fault.kind is FaultKind.TRY_AGAIN:
        assert routes == {route(RETRIEVE)}
        assert len(policy.faulted) >= 9  # every future's first poll
    else:
        expected = {
            "/api/v1/client/config",
            "/api/v1/create_session",
            "/api/v1/create_model",
            "/api/v1/forward_backward",
            "/api/v1/optim_step",
            "/api/v1/save_weights",
            "/api/v1/save_weights_for_sampler",
            "/api/v1/create_sampling_session",
            "/api/v1/asample",
            "/api/v1/load_weights",
            "/api/v1/unload_model",
            "/api/v1/retrieve_future",
            "/api/v1/session_heartbeat",
            "/api/v1/training_runs/{id}/checkpoints/sampler_weights/weights",
            "/api/v1/training_runs/{id}/checkpoints/sampler_weights/weights/publish",
            "/api/v1/training_runs/{id}/checkpoints/sampler_weights/weights/ttl",
        }
        assert expected <= routes, expected - routes
    # Only a download cut in the middle of its body may fail (typed); it worked again.
    assert all(isinstance(e, CheckpointDownloadError) for e in errors), errors
    if fault.kind is not FaultKind.DROP_RESPONSE:
        assert not errors
