"""``SamplingClient``: generate from a base model or saved weights, from any number of threads.

``sample()`` runs in the caller's thread up to the hand-off: it reads the sampler's snapshot
from the shared registry (no lock, no mailbox hop), validates, and admits the sample (or
queues it, holding no thread). The tenant's sampling lane submits it; its completion comes from
the session's batched poll (or a single long poll on servers without one); nothing waits out a
sample's latency on a thread of its own. See ``docs/clients.md`` and
``tinkex_actors/actors/_sample_flow.py``.

A sampling client also works in other processes: pass it (it pickles), or its
:meth:`SamplingClient.get_sampler_handle` string, and the receiving process gets a clone of it
(see ``tinkex_actors/_sampler_handles.py``).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, TypeVar

from tinkex_actors import _constants as c
from tinkex_actors import _sampler_handles as handles
from tinkex_actors.actors import _fork
from tinkex_actors.actors._poller import fast_key
from tinkex_actors.actors._registry import SamplerSnapshot, samplers
from tinkex_actors.actors._sample_flow import prompt_bytes, start
from tinkex_actors.actors._sampler_state import SamplerState, Submission
from tinkex_actors.actors._service import release_child
from tinkex_actors.actors._validate import (
    build,
    check_prompt,
    check_sampling_params,
    check_seconds,
)
from tinkex_actors.config import Config
from tinkex_actors.errors import ClientClosedError, ValidationError
from tinkex_actors.futures import ActorFuture
from tinkex_actors.tokenizer import Tokenizer, TokenizerHandle
from tinkex_actors.types import (
    ModelInput,
    SampleRequest,
    SampleResponse,
    SamplingParams,
    TensorData,
)
from tinkex_actors.wire import to_jsonable

if TYPE_CHECKING:
    from tinkex_actors._service_client import ServiceClient

__all__ = ["SamplingClient"]

T = TypeVar("T")

_LOGPROB_PARAMS = SamplingParams(max_tokens=1)
# Serializes the restoration of clients inherited through a fork (one per client).
_rebind_lock = threading.Lock()


def _new_rebind_lock() -> None:
    global _rebind_lock
    _rebind_lock = threading.Lock()


_fork.on_fork(_new_rebind_lock)


class _WaitBoundFuture(ActorFuture[T]):
    """An ActorFuture whose blocking waits default to ``await_timeout`` seconds."""

    __slots__ = ("_default_wait",)

    def __init__(self, default_wait: float) -> None:
        super().__init__()
        self._default_wait = default_wait

    def result(self, timeout: float | None = None) -> T:
        """Like :meth:`ActorFuture.result`; without ``timeout`` waits ``await_timeout``."""
        return super().result(self._default_wait if timeout is None else timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Like :meth:`ActorFuture.exception`; without ``timeout`` waits ``await_timeout``."""
        return super().exception(self._default_wait if timeout is None else timeout)


class SamplingClient:
    """Samples from one sampler (a base model, or weights saved for sampling).

    Create one with :meth:`ServiceClient.create_sampling_client` or
    :meth:`TrainingClient.save_weights_and_get_sampling_client`; do not construct it directly.

    Thread-safety: every method may be called from any number of threads at once; ``sample``
    takes no lock and makes no actor round trip. Dropping the last reference releases the
    client's actor; requests already sent still complete.

    Other processes: a SamplingClient pickles (``multiprocessing``, ``ProcessPoolExecutor``),
    and :meth:`get_sampler_handle` gives a credential-free string for
    :meth:`from_sampler_handle`; either way the other process gets a *clone*: the same sampler,
    its own ``clone_id`` and connections. A client inherited through ``fork`` becomes one on
    its first sample.
    """

    __slots__ = ("__weakref__", "_finalizer", "_key", "_pid", "_shadow", "_state")

    def __init__(self, state: SamplerState, shadow: handles.Shadow | None = None) -> None:
        self._state = state
        self._key = state.key
        self._pid = os.getpid()
        self._shadow = shadow
        finalizer: weakref.finalize[..., SamplingClient]
        if shadow is None:
            finalizer = weakref.finalize(self, release_child, state.runtime, state.handle)
        else:
            finalizer = weakref.finalize(
                self, handles.release_later, state.runtime, state.handle, shadow
            )
        finalizer.atexit = False
        self._finalizer = finalizer

    # ------------------------------------------------------------------ creation
    @staticmethod
    def create_async(
        service: ServiceClient, base_model: str | None = None, model_path: str | None = None
    ) -> ActorFuture[SamplingClient]:
        """A future of a new sampling client of ``service`` (Tinkex's
        ``SamplingClient.create_async/2``): the same as
        ``service.create_sampling_client_async(base_model, model_path)``.

        Example::

            futures = [SamplingClient.create_async(service, model_path=p) for p in paths]
            samplers = [f.result(timeout=60) for f in futures]  # created concurrently

        Raises:
            ValidationError: neither ``base_model`` nor ``model_path``, or a bad one.
            ClientClosedError: ``service`` is closed.
        """
        return service.create_sampling_client_async(base_model, model_path)

    # ------------------------------------------------------------------ identity
    @property
    def sampler_id(self) -> str:
        """The sampling session id on the server."""
        return self._state.handle.name

    @property
    def base_model(self) -> str | None:
        """The base model this client samples from."""
        snapshot = samplers.get(self._key)
        return None if snapshot is None else snapshot.base_model

    @property
    def model_path(self) -> str | None:
        """The ``tinker://`` weights this client samples, when made from a path."""
        snapshot = samplers.get(self._key)
        return None if snapshot is None else snapshot.model_path

    def get_base_model(self) -> str | None:
        """The base model name (as the official SDK spells it)."""
        return self.base_model

    @property
    def closed(self) -> bool:
        """Whether this client (or its ServiceClient) was closed."""
        return self._state.is_closed()

    @property
    def clone_id(self) -> int:
        """0 for a client made by a ServiceClient; a restored clone's own id otherwise (its
        ``seq_id`` s start at ``clone_id * 1e9``)."""
        return self._state.clone_id

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        prompt: ModelInput,
        sampling_params: SamplingParams | dict[str, Any],
        num_samples: int = 1,
        prompt_logprobs: bool = False,
        topk_prompt_logprobs: int = 0,
        timeout: float | None = None,
        await_timeout: float | None = None,
        *,
        topk_sample_logprobs: int = 0,
        target_prompt_logprobs: TensorData | None = None,
        prompt_alt_tokens_k: int = 0,
        prompt_logprobs_last_n: int | None = None,
        record_stability_info: bool = False,
    ) -> ActorFuture[SampleResponse]:
        """Generate ``num_samples`` continuations of ``prompt``.

        Args:
            prompt: the tokens to continue (``ModelInput.from_ints(ids)``).
            sampling_params: :class:`SamplingParams` (or a dict of its fields).
            num_samples: independent sequences to generate (>= 1).
            prompt_logprobs: also return one logprob per prompt token.
            topk_prompt_logprobs: also return the top-k alternatives per prompt position.
            topk_sample_logprobs: also return the top-k alternatives per sampled position
                (``SampledSequence.topk_logprobs``).
            target_prompt_logprobs: token ids whose logprobs to return at each prompt position:
                an int64 :class:`TensorData` of shape ``[len(prompt) - 1, K]`` (dense or
                sparse CSR), ``-1`` where nothing is asked; row ``i`` is scored at prompt
                position ``i + 1`` (``SampleResponse.target_prompt_logprobs``).
            prompt_alt_tokens_k: draw this many alternative tokens per prompt position, with
                their logprobs (``SampleResponse.prompt_alt_tokens``; distillation).
            prompt_logprobs_last_n: compute prompt logprobs for the last ``n`` positions only
                (needs ``prompt_logprobs``).
            record_stability_info: ask the server to record numerical-stability information
                for this request (sent as the official SDK sends it: false by default).
            timeout: overall deadline of the call, in seconds from now: back-off waits,
                re-submissions and polling included. When it passes the future fails with
                :class:`~tinkex_actors.errors.TinkexTimeoutError` and the client stops
                waiting (the server may still run the request). None: no deadline.
            await_timeout: how long a blocking ``result()`` / ``exception()`` on the
                returned future waits when called without its own timeout. The request keeps
                running when that wait ends; a later ``result()`` can still return it.

        Returns:
            A future of the :class:`SampleResponse`; each sequence carries its
            ``sequence_id``.

        Raises:
            ValidationError: bad arguments (nothing was sent).
            ClientClosedError: the client or its ServiceClient is closed.
            ChildFailedError: the client failed (its actor crashed too often).
        """
        snapshot = samplers.get(self._key)
        if snapshot is None:
            snapshot = self._after_fork()
        state = snapshot.state
        if state.closed or state.runtime.closed:
            raise ClientClosedError(f"the sampling client {snapshot.sampler_id} was closed")
        handle = state.handle
        if handle.failure is not None or handle.closed:
            raise handle.gone_error()
        request = build(
            SampleRequest,
            {
                "prompt": check_prompt(prompt),
                "sampling_params": check_sampling_params(sampling_params),
                "num_samples": num_samples,
                "prompt_logprobs": prompt_logprobs,
                "topk_prompt_logprobs": topk_prompt_logprobs,
                "topk_sample_logprobs": topk_sample_logprobs,
                "target_prompt_logprobs": target_prompt_logprobs,
                "prompt_alt_tokens_k": prompt_alt_tokens_k,
                "prompt_logprobs_last_n": prompt_logprobs_last_n,
                "record_stability_info": record_stability_info,
            },
            sampling_session_id=snapshot.sampler_id,
        )
        seconds = check_seconds(timeout, "timeout")
        wait = check_seconds(await_timeout, "await_timeout")
        deadline = None if seconds is None else time.monotonic() + seconds
        future: ActorFuture[SampleResponse] = (
            ActorFuture() if wait is None else _WaitBoundFuture(wait)
        )
        seq = next(state.seq) + state.clone_id * c.SAMPLE_SEQ_ID_STRIDE
        large = prompt_bytes(request.prompt) > c.SAMPLE_LARGE_PROMPT_BYTES
        sub = Submission(
            state, future, request, to_jsonable(request), seq, fast_key(), deadline, large
        )
        state.track(future)
        try:
            start(sub)
        except BaseException as exc:
            future.set_exception(exc)
            raise
        return future

    def compute_logprobs(
        self, prompt: ModelInput, timeout: float | None = None
    ) -> ActorFuture[list[float | None]]:
        """Logprobs of every prompt token (None where not computed, e.g. the first).

        A one-token sample with ``prompt_logprobs`` on; ``timeout`` as in :meth:`sample`.
        """
        return self.sample(prompt, _LOGPROB_PARAMS, 1, prompt_logprobs=True, timeout=timeout).map(
            lambda response: list(response.prompt_logprobs or [])
        )

    # ------------------------------------------------------------------ tokenizer
    def get_tokenizer(self) -> TokenizerHandle:
        """The tokenizer of this client's base model (loaded once, then cached)."""
        base = self.base_model
        if base is None:
            raise ClientClosedError(f"the sampling client {self.sampler_id} was closed")
        return Tokenizer.get(base)

    # ------------------------------------------------------------------ other processes
    def get_sampler_handle(self) -> str:
        """A string naming this client's sampler, for :meth:`from_sampler_handle` in any
        process (any number of times; each makes a clone). It holds no credential: the
        receiving process uses its own. The official SDK reads it too.

        Raises:
            ClientClosedError: this client (or its ServiceClient) is closed.
        """
        return handles.encode_handle(handles.target_of(self._live_state(), self.base_model))

    @staticmethod
    def from_sampler_handle(
        handle: str, *, api_key: str | None = None, config: Config | None = None
    ) -> SamplingClient:
        """A clone of the sampling client behind ``handle`` (from :meth:`get_sampler_handle`).

        Blocks while it attaches to the sampler's session (a JWT exchange when the server
        uses them, one heartbeat, one ``GET samplers/{id}``). Close it when done (or drop it):
        the last clone of a session in this process stops the threads they share.

        Args:
            handle: the handle string.
            api_key: the key to use; default: this process's credentials, resolved like
                ``Config.new()`` (``TINKER_API_KEY``, ``TINKER_CREDENTIAL_CMD``, the stored
                key file), for the handle's server.
            config: a complete Config to use instead (not with ``api_key``).

        Raises:
            ValidationError: ``handle`` is not a handle, or both ``api_key`` and ``config``.
            NotFoundError: the server does not know the session or the sampler (a handle made
                for another server, or with another key).
            GoneError: the sampler's session ended (its ServiceClient was closed).
            ConfigError: no usable credential in this process.
        """
        target = handles.parse_handle(handle)
        if config is not None and api_key is not None:
            raise ValidationError("pass api_key or config, not both", field="config")
        if config is None:
            config = Config.new(api_key=api_key, base_url=target.base_url)
        elif not isinstance(config, Config):
            raise ValidationError(f"expected a Config, got {type(config).__name__}", field="config")
        state, shadow = handles.open_restored(target, config)
        return SamplingClient(state, shadow)

    def __reduce__(self) -> tuple[Any, tuple[handles.PickledSampler]]:
        """Pickle as a recipe for a clone (see the class docstring); never a socket or thread.

        Raises:
            ClientClosedError: this client (or its ServiceClient) is closed.
        """
        return (_restore_pickled, (handles.pickled(self._live_state(), self.base_model),))

    def _live_state(self) -> SamplerState:
        # The state to describe in a handle or a pickle: this client's, unless it was closed
        # (a client inherited through a fork has no snapshot here, but its state still
        # describes the sampler).
        state = self._state
        inherited = self._pid != os.getpid()
        if state.is_closed() or (samplers.get(self._key) is None and not inherited):
            raise ClientClosedError(f"the sampling client {state.handle.name} was closed")
        return state

    def _after_fork(self) -> SamplerSnapshot:
        # No snapshot: this client was closed, or inherited through a fork (the child forgot
        # the parent's samplers): in that case become a clone of it, once.
        with _rebind_lock:
            snapshot = samplers.get(self._key)
            if snapshot is not None:
                return snapshot  # another thread restored it
            state = self._state
            if self._pid == os.getpid() or state.closed or state.runtime.closed:
                raise ClientClosedError(f"the sampling client {state.handle.name} was closed")
            target = handles.target_of(state, None)  # the server names the base model
            self._finalizer.detach()  # the parent's tree is not this process's to release
            fresh, shadow = handles.open_restored(target, state.runtime.config)
            self._state, self._key, self._shadow = fresh, fresh.key, shadow
            self._pid = os.getpid()
            finalizer = weakref.finalize(
                self, handles.release_later, fresh.runtime, fresh.handle, shadow
            )
            finalizer.atexit = False
            self._finalizer = finalizer
            snapshot = samplers.get(self._key)
            if snapshot is None:
                raise ClientClosedError(f"the sampling client {fresh.handle.name} was closed")
            return snapshot

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close this client: pending samples fail with ClientClosedError; its actor stops.

        Samples already sent run to completion on the server; their results are dropped. A
        restored clone also lets go of the threads it shares with the other clones of its
        session in this process (the last one stops them). Idempotent.
        """
        if self._state.closed:
            return
        if self._pid != os.getpid():
            # Inherited through a fork and never used here: the state is the parent's.
            # Only the flag: cutting its exchanges short would shut the parent's sockets.
            self._finalizer.detach()
            self._state.closed = True
            return
        self._state.close()
        released = self._finalizer.detach()
        if released is None:
            return  # released already (collected, or inherited through a fork)
        if self._shadow is None:
            release_child(self._state.runtime, self._state.handle)
        else:
            handles.release_restored(self._state.runtime, self._state.handle, self._shadow)

    def __enter__(self) -> SamplingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        clone = f", clone_id={self.clone_id}" if self.clone_id else ""
        return (
            f"SamplingClient(sampler_id={self.sampler_id!r}, "
            f"base_model={self.base_model!r}{clone}, {state})"
        )


def _restore_pickled(payload: handles.PickledSampler) -> SamplingClient:
    """Unpickle a SamplingClient: a clone of the pickled one, with its Config and credential
    source (see ``tinkex_actors/_sampler_handles.py``)."""
    state, shadow = handles.open_restored(payload.target, handles.config_of(payload))
    return SamplingClient(state, shadow)
