"""``TrainingClient``: one LoRA model on the server, trained through its actor's mailbox.

Every training call validates its input in the caller's thread, then sends one message to the
model's TrainingActor and returns an :class:`ActorFuture` at once. The actor submits in call
order (seq_id 1, 2, 3, ...); worker threads poll the results. Calls pipeline: an
``optim_step`` right after a ``forward_backward`` is sent without waiting for the first one's
result. See ``docs/clients.md``.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from tinkex_actors import _endpoints as ep
from tinkex_actors._chunking import chunk_data
from tinkex_actors._custom_loss import (
    CustomLossFn,
    compute_custom_loss,
    custom_phase1_data,
    require_torch,
)
from tinkex_actors._endpoints import QueuedEndpoint
from tinkex_actors._sampling_client import SamplingClient
from tinkex_actors.actors._base import Call
from tinkex_actors.actors._custom_flow import SURROGATE_LOSS, CustomCall, run_custom
from tinkex_actors.actors._restore import resume
from tinkex_actors.actors._sampling import SamplerState
from tinkex_actors.actors._service import ServiceActor, release_child, send_to_service
from tinkex_actors.actors._training import TrainingActor, TrainingState
from tinkex_actors.actors._validate import (
    build,
    check_forward_input,
    check_name,
    check_optim_params,
    check_seconds,
    check_tinker_path,
    snapshot_map,
)
from tinkex_actors.errors import (
    ClientClosedError,
    ResponseDecodeError,
    TinkexError,
    ValidationError,
)
from tinkex_actors.futures import ActorFuture
from tinkex_actors.recovery import Restored
from tinkex_actors.tokenizer import Tokenizer, TokenizerHandle
from tinkex_actors.types import (
    AdamParams,
    Datum,
    DimuonParams,
    ForwardBackwardInput,
    ForwardBackwardOutput,
    ForwardBackwardRequest,
    GetInfoResponse,
    LoadWeightsRequest,
    LoadWeightsResponse,
    OptimStepRequest,
    OptimStepResponse,
    SaveWeightsForSamplerRequest,
    SaveWeightsForSamplerResponseInternal,
    SaveWeightsRequest,
    SaveWeightsResponse,
    UnloadModelRequest,
    UnloadModelResponse,
)
from tinkex_actors.wire import encode_forward_backward_request, to_jsonable

__all__ = ["TrainingClient"]

T = TypeVar("T")


class TrainingClient:
    """Trains one LoRA model: forward/backward passes, optimizer steps, checkpoints.

    Create one with :meth:`ServiceClient.create_lora_training_client` (or
    ``create_training_client_from_state``); do not construct it directly.

    Thread-safety: any thread may call any method; calls are submitted in the order the
    client receives them. Dropping the last reference releases the client's actor (requests
    already sent still complete); :meth:`close` does it explicitly.
    """

    __slots__ = ("__weakref__", "_finalizer", "_handle", "_state")

    def __init__(self, state: TrainingState) -> None:
        self._state = state
        self._handle = state.handle
        finalizer = weakref.finalize(self, release_child, state.runtime, state.handle)
        finalizer.atexit = False
        self._finalizer = finalizer

    # ------------------------------------------------------------------ identity
    @property
    def model_id(self) -> str:
        """The server's model id (the training run id)."""
        return self._state.model_id

    @property
    def base_model(self) -> str | None:
        """The base model being fine-tuned (from get_info)."""
        info = self._state.info
        return None if info is None else info.model_data.model_name or info.model_name

    @property
    def closed(self) -> bool:
        """Whether this client (or its ServiceClient) was closed."""
        return self._state.is_closed()

    # ------------------------------------------------------------------ plumbing
    def _check(self) -> None:
        state = self._state
        if state.closed or state.runtime.closed:
            raise ClientClosedError(f"the training client {state.model_id} was closed")
        self._handle.check()

    def _call(self, fn: Callable[..., None], *args: Any) -> ActorFuture[Any]:
        future: ActorFuture[Any] = ActorFuture()
        self._state.track(future)
        try:
            self._handle.send(Call(fn, args, future))
        except TinkexError as exc:
            future.set_exception(exc)
            raise
        return future

    def _sequenced(self, endpoint: QueuedEndpoint[T], request: Any) -> ActorFuture[T]:
        payload = to_jsonable(request)
        payload.pop("seq_id", None)
        return self._call(TrainingActor.submit_json, endpoint, payload)

    # ------------------------------------------------------------------ training
    def forward_backward(
        self,
        data: Iterable[Datum],
        loss_fn: str,
        loss_fn_config: Mapping[str, float | str] | None = None,
    ) -> ActorFuture[ForwardBackwardOutput]:
        """Run the model on ``data``, compute ``loss_fn`` and accumulate its gradients.

        Large batches are split into chunks (the server's ``client/config`` limits, else
        ``Config.max_chunk_datums`` datums / ``Config.max_chunk_tokens`` tokens); each chunk
        gets its own seq_id and the results are combined in order, metrics reduced by suffix.

        Args:
            data: the batch (a non-empty list of :class:`Datum`).
            loss_fn: ``cross_entropy``, ``importance_sampling``, ``ppo``, ``cispo``, ``dro``
                (newer servers: ``gspo``, ``stable_reinforce``, ``custom``).
            loss_fn_config: loss parameters, e.g. ``{"clip_low_threshold": 0.8}``.

        Returns:
            A future of the :class:`ForwardBackwardOutput` (per-datum outputs, metrics).

        Raises:
            ValidationError: bad input (nothing was sent).
            ClientClosedError / ChildFailedError: the client cannot take calls.
        """
        return self._forward(data, loss_fn, loss_fn_config, forward_only=False)

    def forward(
        self,
        data: Iterable[Datum],
        loss_fn: str,
        loss_fn_config: Mapping[str, float | str] | None = None,
    ) -> ActorFuture[ForwardBackwardOutput]:
        """Like :meth:`forward_backward` without the backward pass (no gradients)."""
        return self._forward(data, loss_fn, loss_fn_config, forward_only=True)

    def _forward(
        self,
        data: Iterable[Datum],
        loss_fn: str,
        loss_fn_config: Mapping[str, float | str] | None,
        *,
        forward_only: bool,
    ) -> ActorFuture[ForwardBackwardOutput]:
        self._check()
        batch = check_forward_input(data, loss_fn, loss_fn_config)
        bodies = self._encode_chunks(batch, forward_only=forward_only)[0]
        endpoint = ep.FORWARD if forward_only else ep.FORWARD_BACKWARD
        return self._call(TrainingActor.submit_forward, bodies, endpoint)

    def _encode_chunks(
        self, batch: ForwardBackwardInput, *, forward_only: bool
    ) -> tuple[list[bytes], list[int]]:
        """The batch's chunks encoded without a seq_id, and the datums in each."""
        state = self._state
        chunks = chunk_data(batch.data, state.runtime.chunk_limits)
        bodies = [
            encode_forward_backward_request(
                ForwardBackwardRequest(
                    forward_backward_input=batch
                    if len(chunks) == 1
                    else ForwardBackwardInput(
                        data=chunk, loss_fn=batch.loss_fn, loss_fn_config=batch.loss_fn_config
                    ),
                    model_id=state.model_id,
                ),
                forward_only=forward_only,
            )
            for chunk in chunks
        ]
        return bodies, [len(chunk) for chunk in chunks]

    def forward_backward_custom(
        self, data: Sequence[Datum], loss_fn: CustomLossFn
    ) -> ActorFuture[ForwardBackwardOutput]:
        """Accumulate the gradients of a loss computed here, on torch tensors.

        ``loss_fn(data, logprobs) -> (loss, metrics)`` gets the datums as given (every
        ``loss_fn_inputs`` key, e.g. a DPO pair's reference logprobs) and one float32 tensor
        per datum holding the log-probabilities of its ``target_tokens`` (same shape), which
        require grad; it returns a scalar tensor computed from them and a ``{name: number}``
        dict. Two passes run: a forward-only ``cross_entropy`` pass for the logprobs, then a
        ``cross_entropy`` forward_backward with ``weights = -dloss/dlogprobs``, whose
        gradients are the custom loss's. Only ``target_tokens`` and ``weights`` are sent.

        Returns at once. Both passes keep this call's place in the model's sequence: an
        ``optim_step`` called right after applies after the second pass. ``loss_fn`` runs on
        the client's result thread, never in the caller's or the actor's. Needs PyTorch (the
        ``custom-loss`` extra). See ``docs/custom-loss.md``.

        Args:
            data: the batch (a non-empty list of :class:`Datum`, each with ``target_tokens``).
            loss_fn: the loss function.

        Returns:
            A future of the second pass's :class:`ForwardBackwardOutput`, whose metrics are
            ``loss_fn``'s, ``loss:sum`` (the custom loss) and ``surrogate_loss:sum`` (the
            server's cross-entropy sum). If ``loss_fn`` raises, the future fails with that
            very exception; if it returns something unusable (not a scalar, no grad, bad
            gradients or metrics), with :class:`ValidationError`. Either way nothing is
            applied, and the client stays usable.

        Raises:
            MissingDependencyError: PyTorch is not installed.
            ValidationError: bad input, e.g. a datum without ``target_tokens`` (nothing sent).
            ClientClosedError / ChildFailedError: the client cannot take calls.
        """
        self._check()
        require_torch()
        if not callable(loss_fn):
            raise ValidationError(
                f"expected a callable (data, logprobs) -> (loss, metrics), got "
                f"{type(loss_fn).__name__}",
                field="loss_fn",
            )
        items, phase1 = custom_phase1_data(data)
        batch = check_forward_input(phase1, SURROGATE_LOSS, None)
        bodies, sizes = self._encode_chunks(batch, forward_only=True)
        call = CustomCall(
            model_id=self.model_id,
            forward_bodies=bodies,
            chunk_sizes=sizes,
            compute=functools.partial(compute_custom_loss, loss_fn, items),
        )
        then = functools.partial(run_custom, self._state, call)
        return self._call(TrainingActor.submit_reserving, bodies, len(bodies), then)

    def optim_step(
        self,
        optim_params: AdamParams | DimuonParams | None = None,
        *,
        adam_params: AdamParams | None = None,
    ) -> ActorFuture[OptimStepResponse]:
        """Apply the accumulated gradients with the model's optimizer and clear them.

        Args:
            optim_params: :class:`AdamParams` for AdamW models (the default), or
                :class:`DimuonParams` for models created with
                ``optimizer=OptimizerConfig(type="dimuon")``. The server answers the other
                family's parameters with a 400 naming both.
            adam_params: the same as ``optim_params`` for AdamW (the official SDK's legacy
                keyword); give one of the two.

        Raises:
            ValidationError: neither or both given, or not AdamParams / DimuonParams.
        """
        self._check()
        params = check_optim_params(optim_params, adam_params)
        request = OptimStepRequest.of(params, self.model_id)
        return self._sequenced(ep.OPTIM_STEP, request)

    # ------------------------------------------------------------------ checkpoints
    def save_state(
        self,
        name: str,
        ttl_seconds: int | None = None,
        overwrite: bool = False,
        user_metadata: Mapping[str, str] | None = None,
    ) -> ActorFuture[SaveWeightsResponse]:
        """Save weights and optimizer state as ``tinker://<run>/weights/<name>``.

        Args:
            name: the checkpoint name.
            ttl_seconds: delete the checkpoint after this many seconds (None: keep).
            overwrite: replace a checkpoint of the run that has this name already. Without
                it, such a save fails at once with :class:`~tinkex_actors.errors.ConflictError`
                (a conflict is never retried).
            user_metadata: ``str -> str`` kept with the checkpoint (shown in listings).
        """
        self._check()
        request = build(
            SaveWeightsRequest,
            {
                "ttl_seconds": ttl_seconds,
                "overwrite": overwrite,
                "user_metadata": snapshot_map(user_metadata),
            },
            model_id=self.model_id,
            path=check_name(name, "name"),
        )
        return self._sequenced(ep.SAVE_WEIGHTS, request)

    def load_state(self, path: str) -> ActorFuture[LoadWeightsResponse]:
        """Load the weights of checkpoint ``path`` (``tinker://.../weights/...``)."""
        return self._load(path, optimizer=False)

    def load_state_with_optimizer(self, path: str) -> ActorFuture[LoadWeightsResponse]:
        """Load the weights and the optimizer state of checkpoint ``path``."""
        return self._load(path, optimizer=True)

    def _load(self, path: str, *, optimizer: bool) -> ActorFuture[LoadWeightsResponse]:
        self._check()
        request = LoadWeightsRequest(
            path=check_tinker_path(path, "path"), optimizer=optimizer, model_id=self.model_id
        )
        return self._sequenced(ep.LOAD_WEIGHTS, request)

    def save_weights_for_sampler(
        self,
        name: str,
        path: str | None = None,
        sampling_session_seq_id: int | None = None,
        ttl_seconds: int | None = None,
        user_metadata: Mapping[str, str] | None = None,
    ) -> ActorFuture[SaveWeightsForSamplerResponseInternal]:
        """Save the weights for sampling as ``tinker://<run>/sampler_weights/<name>``.

        Args:
            name: the checkpoint name.
            path: a name to use instead of ``name`` (deterministic naming).
            sampling_session_seq_id: also create the sampling session with this session
                counter value (the answer then carries ``sampling_session_id``).
            ttl_seconds: delete the checkpoint after this many seconds (None: keep).
            user_metadata: ``str -> str`` kept with the checkpoint (shown in listings).

        Returns:
            A future whose result carries ``path`` (and ``sampling_session_id`` when the
            server created a sampling session).
        """
        self._check()
        chosen = check_name(name if path is None else path, "name" if path is None else "path")
        request = build(
            SaveWeightsForSamplerRequest,
            {
                "sampling_session_seq_id": sampling_session_seq_id,
                "ttl_seconds": ttl_seconds,
                "user_metadata": snapshot_map(user_metadata),
            },
            model_id=self.model_id,
            path=chosen,
        )
        return self._sequenced(ep.SAVE_WEIGHTS_FOR_SAMPLER, request)

    # ------------------------------------------------------------------ sampling clients
    def save_weights_and_get_sampling_client_async(
        self, name: str | None = None
    ) -> ActorFuture[SamplingClient]:
        """Save the current weights and return a future of a SamplingClient over them.

        Without ``name`` the server keeps the snapshot with the new sampling session (no
        checkpoint is listed); with ``name`` the weights are saved as a named sampler
        checkpoint first and the client samples from its path.
        """
        self._check()
        state = self._state
        runtime = state.runtime
        base = self.base_model
        if name is not None:
            return self.save_weights_for_sampler(check_name(name, "name")).then(
                lambda saved: self._sampler_from_path(str(saved.path), base)
            )
        request = SaveWeightsForSamplerRequest(
            model_id=self.model_id,
            sampling_session_seq_id=runtime.next_sampling_session_seq_id(),
        )
        saved = self._sequenced(ep.SAVE_WEIGHTS_FOR_SAMPLER, request)

        def adopt(answer: SaveWeightsForSamplerResponseInternal) -> ActorFuture[SamplingClient]:
            if answer.sampling_session_id is None:
                raise ResponseDecodeError(
                    "save_weights_for_sampler answered without a sampling_session_id",
                    expected="SaveWeightsForSamplerResponseInternal.sampling_session_id",
                )
            created: ActorFuture[SamplerState] = send_to_service(
                runtime,
                ServiceActor.adopt_sampling,
                (answer.sampling_session_id, base, answer.path),
            )
            return created.map(SamplingClient)

        return saved.then(adopt)

    def save_weights_and_get_sampling_client(
        self, name: str | None = None, *, timeout: float | None = None
    ) -> SamplingClient:
        """Blocking :meth:`save_weights_and_get_sampling_client_async` (``timeout`` seconds)."""
        seconds = check_seconds(timeout, "timeout")
        return self.save_weights_and_get_sampling_client_async(name).result(seconds)

    def _sampler_from_path(self, path: str, base: str | None) -> ActorFuture[SamplingClient]:
        created: ActorFuture[SamplerState] = send_to_service(
            self._state.runtime, ServiceActor.start_sampling, (None, path, base)
        )
        return created.map(SamplingClient)

    def create_sampling_client_async(self, model_path: str) -> ActorFuture[SamplingClient]:
        """A future of a SamplingClient over saved weights ``model_path``."""
        self._check()
        return self._sampler_from_path(check_tinker_path(model_path, "model_path"), None)

    def create_sampling_client(
        self, model_path: str, *, timeout: float | None = None
    ) -> SamplingClient:
        """Blocking :meth:`create_sampling_client_async`."""
        seconds = check_seconds(timeout, "timeout")
        return self.create_sampling_client_async(model_path).result(seconds)

    # ------------------------------------------------------------------ model
    def get_info(self) -> GetInfoResponse:
        """The model's info (fetched at creation and cached)."""
        return self.get_info_async().result(0)

    def get_info_async(self) -> ActorFuture[GetInfoResponse]:
        """The cached info as a completed future."""
        self._check()
        info = self._state.info
        if info is None:  # pragma: no cover - a TrainingClient exists only once created
            raise ValidationError("the model was not created yet", field="model_id")
        return ActorFuture.completed(info)

    def unload_model(self) -> ActorFuture[UnloadModelResponse]:
        """Free the model on the server after its queued work (its checkpoints stay)."""
        self._check()
        payload = to_jsonable(UnloadModelRequest(model_id=self.model_id))
        return self._call(TrainingActor.submit_unsequenced, ep.UNLOAD_MODEL, payload)

    def get_tokenizer(self) -> TokenizerHandle:
        """The tokenizer of the base model (get_info's ``model_name`` and ``tokenizer_id``)."""
        info = self.get_info()
        name = info.model_data.model_name or info.model_name
        if name is None:
            raise ValidationError("the server's get_info names no base model", field="model_name")
        return Tokenizer.get(name, tokenizer_id=info.model_data.tokenizer_id)

    # ------------------------------------------------------------------ recovery
    @property
    def last_checkpoint(self) -> str | None:
        """The newest ``save_state`` path whose result arrived (or the checkpoint this client
        was created from): where a restore would start. None when there is none."""
        return self._state.guard.checkpoint

    def resume(self, *, timeout: float | None = None) -> Restored | None:
        """Go on after the model was lost and restored (``RecoveryPolicy.restore_models``).

        Waits until the restore finished, then lets calls through again: calls made before
        this one failed with :class:`~tinkex_actors.errors.ModelLostError`, calls made after
        it run on the restored model. Continue training from ``optim_steps`` of the result.
        Returns None when nothing was lost.

        Raises:
            ModelLostError: the model could not be restored (or restoring is off).
            TinkexTimeoutError: the restore did not finish within ``timeout`` seconds.
        """
        return resume(self._state, check_seconds(timeout, "timeout"))

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Release this client: pending calls fail with ClientClosedError; its actor stops.

        Requests already sent run to completion on the server (their results are dropped);
        the model stays loaded there until :meth:`unload_model` or the session ends.
        Idempotent.
        """
        state = self._state
        if state.closed:
            return
        self._handle.close()
        state.close()
        release_child(state.runtime, self._handle)

    def __enter__(self) -> TrainingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (
            f"TrainingClient(model_id={self.model_id!r}, base_model={self.base_model!r}, {state})"
        )
