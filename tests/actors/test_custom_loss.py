"""forward_backward_custom on the shared null server: the two passes on the wire, their place
in the model's sequence, metrics, failures in the user's function, bad loss functions."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import torch
import zstandard
from _servers import ServerHandle

from tinkex_actors import Config, ServiceClient, TrainingClient, types
from tinkex_actors.errors import MissingDependencyError, ValidationError
from tinkex_actors.wire import decode_forward_backward_request

from ._backends import Event, Recorder, forward_request
from .conftest import BASE_MODEL, datum

#: Five datums: the shared null server's two-datum chunks make three chunks per pass.
DATA = [datum([1 + i, 5 + i, 9 + i, 13 + i, 17 + i]) for i in range(5)]
ADAM = types.AdamParams(learning_rate=1e-2)
WAIT = 30


def cross_entropy(
    data: list[types.Datum], logprobs: list[torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    """The built-in loss, written as a custom one: -sum(weights * logprobs)."""
    terms = [
        -(torch.tensor(d.loss_fn_inputs["weights"].to_list()) * lp).sum()
        for d, lp in zip(data, logprobs, strict=True)
    ]
    return torch.stack(terms).sum(), {"datums:sum": float(len(data))}


@pytest.fixture
def recorded(null_server: ServerHandle) -> Iterator[tuple[ServiceClient, Recorder]]:
    config = Config(api_key=null_server.api_key, base_url=null_server.base_url)
    recorder = Recorder(config)
    with ServiceClient(config, backend=recorder) as service:
        yield service, recorder


def _model(service: ServiceClient, seed: int = 7) -> TrainingClient:
    return service.create_lora_training_client(BASE_MODEL, {"rank": 4, "seed": seed}, timeout=WAIT)


def _fwdbwd(recorder: Recorder) -> list[types.ForwardBackwardRequest]:
    return [forward_request(e) for e in recorder.sent("/forward_backward")]


def _proto_forward_only(event: Event) -> bool:
    body = event.body or b""
    if event.headers.get("Content-Encoding") == "zstd":
        body = zstandard.ZstdDecompressor().decompress(body, max_output_size=1 << 26)
    return bool(decode_forward_backward_request(body)[1])


def test_two_passes_reserved_seq_ids_and_metrics(
    recorded: tuple[ServiceClient, Recorder],
) -> None:
    service, recorder = recorded
    training = _model(service)
    extra = [
        types.Datum(
            d.model_input,
            {**d.loss_fn_inputs, "ref": types.TensorData.from_list([0.5], "float32")},
        )
        for d in DATA
    ]
    seen: list[int] = []

    def loss_fn(
        data: list[types.Datum], logprobs: list[torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        # Every loss_fn_inputs key reaches the function, sent or not.
        seen.extend(d.loss_fn_inputs["ref"].size for d in data)
        # The optim_step called after this call reaches the server while the loss is still
        # being computed: its seq_id comes after the reserved ones, so it need not wait.
        deadline = time.monotonic() + WAIT
        while not recorder.sent("/optim_step") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert recorder.sent("/optim_step"), "optim_step waited for the custom call"
        assert all(lp.requires_grad and lp.dtype == torch.float32 for lp in logprobs)
        assert [tuple(lp.shape) for lp in logprobs] == [(4,)] * len(data)
        loss = sum((2.0 * lp * lp).sum() for lp in logprobs)
        assert isinstance(loss, torch.Tensor)
        return loss, {"custom:mean": 1.5}

    custom = training.forward_backward_custom(extra, loss_fn)
    step = training.optim_step(ADAM)  # submitted before the custom call's result exists
    out = custom.result(timeout=WAIT)
    assert step.result(timeout=WAIT).metrics is not None
    assert seen == [1] * len(DATA)

    requests = _fwdbwd(recorder)
    events = recorder.sent("/forward_backward")
    assert len(requests) == 6  # three chunks per pass
    forward, backward = requests[:3], requests[3:]
    assert [_proto_forward_only(e) for e in events] == [True] * 3 + [False] * 3
    for request in requests:
        assert request.forward_backward_input.loss_fn == "cross_entropy"
        for d in request.forward_backward_input.data:
            assert set(d.loss_fn_inputs) == {"target_tokens", "weights"}  # "ref" stays here
    # Phase 1 keeps the datums' weights; phase 2 sends -dloss/dlogprobs = -4 * logprobs.
    sent_forward = [d for r in forward for d in r.forward_backward_input.data]
    assert [d.loss_fn_inputs["weights"].to_list() for d in sent_forward] == [[1.0] * 4] * 5
    sent_backward = [d for r in backward for d in r.forward_backward_input.data]
    assert [d.loss_fn_inputs["target_tokens"] for d in sent_backward] == [
        d.loss_fn_inputs["target_tokens"] for d in DATA
    ]
    for d, output in zip(sent_backward, out.loss_fn_outputs, strict=True):
        logprobs = output["logprobs"].to_list()
        assert d.loss_fn_inputs["weights"].to_list() == pytest.approx(
            [-4.0 * lp for lp in logprobs], rel=1e-5
        )
    # seq_ids: the forward chunks, then the reserved backward chunks, then the optim_step.
    seqs = [r.seq_id for r in requests]
    optim = recorder.sent("/optim_step")
    optim_seq = orjson.loads(optim[0].body or b"{}")["seq_id"]
    assert seqs[3:] == [seqs[2] + 1, seqs[2] + 2, seqs[2] + 3]
    assert seqs[:3] == [seqs[0], seqs[0] + 1, seqs[0] + 2]
    assert optim_seq == seqs[5] + 1
    # Reserving lets the optim_step go out before phase 2 is even computed (see loss_fn).
    log = recorder.snapshot()
    first_backward = log.index(events[3])
    assert log.index(optim[0]) < first_backward

    # Metrics: the loss function's own, the custom loss and the server's surrogate.
    expected = sum(2.0 * lp * lp for o in out.loss_fn_outputs for lp in o["logprobs"].to_list())
    assert out.metrics["loss:sum"] == pytest.approx(expected, rel=1e-5)
    assert out.metrics["custom:mean"] == 1.5
    surrogate = -sum(
        w * lp
        for d, o in zip(sent_backward, out.loss_fn_outputs, strict=True)
        for w, lp in zip(
            d.loss_fn_inputs["weights"].to_list(), o["logprobs"].to_list(), strict=True
        )
    )
    assert out.metrics["surrogate_loss:sum"] == pytest.approx(surrogate, rel=1e-4)
    assert len(out.loss_fn_outputs) == len(DATA)


def test_custom_cross_entropy_trains_like_the_builtin_loss(service: ServiceClient) -> None:
    builtin, custom = _model(service, seed=11), _model(service, seed=11)
    for _ in range(3):
        expected = builtin.forward_backward(DATA, "cross_entropy")
        builtin_step = builtin.optim_step(ADAM)
        got = custom.forward_backward_custom(DATA, cross_entropy)
        # Submitted right after: applies after phase 2, so it sees the custom gradients.
        custom_step = custom.optim_step(ADAM)
        want, have = expected.result(timeout=WAIT), got.result(timeout=WAIT)
        assert have.metrics["loss:sum"] == pytest.approx(want.metrics["loss:sum"], rel=1e-5)
        assert have.metrics["surrogate_loss:sum"] == pytest.approx(
            want.metrics["loss:sum"], rel=1e-5
        )
        assert have.metrics["datums:sum"] == len(DATA)
        norms = (builtin_step.result(timeout=WAIT), custom_step.result(timeout=WAIT))
        assert norms[0].metrics
        assert norms[1].metrics
        assert norms[1].metrics["grad_norm:mean"] == pytest.approx(
            norms[0].metrics["grad_norm:mean"], rel=1e-4
        )
    after = [
        m.forward(DATA, "cross_entropy").result(timeout=WAIT).metrics["loss:sum"]
        for m in (builtin, custom)
    ]
    assert after[1] == pytest.approx(after[0], rel=1e-5)


def _gap_skipped(server: ServerHandle, model_id: str) -> bool:
    return any(
        "seq_gap_skipped" in line and model_id in line
        for line in server.log_tail(200_000).splitlines()
    )


def test_user_exception_fails_the_future_and_leaves_no_gap(
    null_server: ServerHandle, recorded: tuple[ServiceClient, Recorder]
) -> None:
    service, recorder = recorded
    training = _model(service)
    boom = KeyError("no such datum")

    def broken(data: list[types.Datum], logprobs: list[torch.Tensor]) -> Any:
        raise boom

    failed = training.forward_backward_custom(DATA, broken)
    step = training.optim_step(ADAM)  # already on the server when the function fails
    with pytest.raises(KeyError) as raised:
        failed.result(timeout=WAIT)
    assert raised.value is boom
    # Nothing of the failed call was applied: the step ran over no gradients.
    metrics = step.result(timeout=WAIT).metrics
    assert metrics is not None
    assert metrics["grad_norm:mean"] == 0.0
    # The reserved ids went out as forward-only fillers carrying the phase-1 chunks.
    events = recorder.sent("/forward_backward")
    assert [_proto_forward_only(e) for e in events] == [True] * 6
    seqs = [forward_request(e).seq_id for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + 6))
    # The client goes on at once: a 30 s gap on the server would time this wait out.
    after = training.forward_backward(DATA, "cross_entropy").result(timeout=10)
    assert after.metrics["loss:sum"] > 0
    again = training.forward_backward_custom(DATA, cross_entropy).result(timeout=10)
    assert again.metrics["loss:sum"] == pytest.approx(after.metrics["loss:sum"], rel=1e-5)
    assert not _gap_skipped(null_server, training.model_id)


def _scalar(data: list[types.Datum], logprobs: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([lp.sum() for lp in logprobs]).sum()


def _non_scalar(data: list[types.Datum], logprobs: list[torch.Tensor]) -> Any:
    return torch.stack([lp.sum() for lp in logprobs]), {}


def _detached(data: list[types.Datum], logprobs: list[torch.Tensor]) -> Any:
    return _scalar(data, logprobs).detach(), {}


def _not_a_tensor(data: list[types.Datum], logprobs: list[torch.Tensor]) -> Any:
    return _scalar(data, logprobs).item(), {}


def _no_metrics(data: list[types.Datum], logprobs: list[torch.Tensor]) -> Any:
    return _scalar(data, logprobs)


def _bad_metric(data: list[types.Datum], logprobs: list[torch.Tensor]) -> Any:
    return _scalar(data, logprobs), {"m": "high"}


def _resized_by_hook(data: list[types.Datum], logprobs: list[torch.Tensor]) -> Any:
    logprobs[0].register_hook(lambda grad: grad[:-1])
    return _scalar(data, logprobs), {}


def _wrong_shape_grad(data: list[types.Datum], logprobs: list[torch.Tensor]) -> Any:
    def swap(leaf: torch.Tensor) -> None:
        assert leaf.grad is not None
        leaf.grad.data = torch.ones(7)  # bypasses autograd's own shape checks

    logprobs[1].register_post_accumulate_grad_hook(swap)
    return _scalar(data, logprobs), {}


def _nan_grad(data: list[types.Datum], logprobs: list[torch.Tensor]) -> Any:
    return (torch.sqrt(-logprobs[0]) * float("nan")).sum(), {}


@pytest.mark.parametrize(
    ("loss_fn", "message"),
    [
        (_non_scalar, "non-scalar loss of shape (5,)"),
        (_detached, "without grad"),
        (_not_a_tensor, "returned a float as the loss"),
        (_no_metrics, "must return (loss, metrics)"),
        (_bad_metric, "metric 'm' is not a number"),
        (_resized_by_hook, "backward pass through the loss failed"),
        (_wrong_shape_grad, "gradient by logprobs[1] has shape (7,), expected (4,)"),
        (_nan_grad, "gradient by logprobs[0] is not finite"),
    ],
)
def test_unusable_loss_functions_are_validation_errors(
    training: TrainingClient, loss_fn: Any, message: str
) -> None:
    future = training.forward_backward_custom(DATA, loss_fn)
    with pytest.raises(ValidationError) as raised:
        future.result(timeout=WAIT)
    assert message in str(raised.value)
    assert raised.value.field is not None
    assert raised.value.field.startswith("loss_fn")
    # The client stays usable, without a gap to wait out.
    assert training.forward_backward(DATA, "cross_entropy").result(timeout=10).metrics


def test_bad_input_is_rejected_before_anything_is_sent(
    recorded: tuple[ServiceClient, Recorder],
) -> None:
    service, recorder = recorded
    training = _model(service)
    no_targets = types.Datum(DATA[0].model_input, {"weights": [1.0] * 4})
    with pytest.raises(ValidationError) as raised:
        training.forward_backward_custom([DATA[0], no_targets], cross_entropy)
    assert raised.value.field == "data[1].loss_fn_inputs.target_tokens"
    for data, field in [([], "data"), (DATA[0], "data"), ([DATA[0], "x"], "data[1]")]:
        with pytest.raises(ValidationError) as raised:
            training.forward_backward_custom(data, cross_entropy)  # type: ignore[arg-type]
        assert raised.value.field == field
    with pytest.raises(ValidationError, match="expected a callable"):
        training.forward_backward_custom(DATA, "cross_entropy")  # type: ignore[arg-type]
    short = types.Datum(DATA[0].model_input, {"target_tokens": [1, 2]})
    with pytest.raises(ValidationError):
        training.forward_backward_custom([short], cross_entropy)
    assert recorder.sent("/forward_backward") == []
    # Without weights, phase 1 sends zeros; the loss still sees the logprobs.
    no_weights = types.Datum(DATA[0].model_input, {"target_tokens": [5, 9, 13, 17]})
    out = training.forward_backward_custom([no_weights], _scalar_pair).result(timeout=WAIT)
    first = forward_request(recorder.sent("/forward_backward")[0])
    assert first.forward_backward_input.data[0].loss_fn_inputs["weights"].to_list() == [0.0] * 4
    assert math.isfinite(out.metrics["loss:sum"])


def _scalar_pair(data: list[types.Datum], logprobs: list[torch.Tensor]) -> Any:
    return _scalar(data, logprobs), {}


def test_without_torch_the_error_names_the_extra(null_server: ServerHandle) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # as if PyTorch were not installed
        from tinkex_actors import Config, ServiceClient, types
        from tinkex_actors.errors import MissingDependencyError

        config = Config(api_key=sys.argv[1], base_url=sys.argv[2])
        with ServiceClient(config) as service:
            training = service.create_lora_training_client({BASE_MODEL!r}, timeout=30)
            data = [types.Datum(types.ModelInput.from_ints([1, 2]), {{"target_tokens": [2, 3]}})]
            try:
                training.forward_backward_custom(data, lambda d, lp: (lp[0].sum(), {{}}))
            except MissingDependencyError as exc:
                assert isinstance(exc, ImportError)
                print("raised:", exc)
            else:
                raise SystemExit("no error")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, null_server.api_key, null_server.base_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "raised:" in done.stdout
    assert "pip install 'tinkex_actors[custom-loss]'" in done.stdout
    assert issubclass(MissingDependencyError, ImportError)
