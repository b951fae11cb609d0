"""Sampling from other processes: sampler handles, pickled sampling clients, restored clients.

A :class:`~tinkex_actors.SamplingClient` crosses a process boundary in one of three ways:

* **a handle** (``get_sampler_handle()`` / ``from_sampler_handle()``): a string, base64url
  JSON in the official SDK's layout (so handles travel between both SDKs), naming the server,
  the session, the sampler, its base model and the server's ``client/config``. It carries no
  credential: the receiving process resolves its own (``Config.new()``), or is given one.
* **pickle** (``pickle.dumps(client)``, what ``multiprocessing`` and ``ProcessPoolExecutor``
  do to arguments): the same, plus the client's Config options and its credential *source*:
  ``TINKER_API_KEY`` or the stored key file are carried by name (with a one-way fingerprint,
  so a process holding another key fails clearly), a credential command as its command line.
  Only a key passed explicitly (``api_key=``) travels as itself: it has no other source.
* **fork** without pickling (``multiprocessing`` ``fork`` start method, a client passed to
  ``Process(args=...)``): the inherited client restores itself on its first sample.

A restored client is a *clone*: it samples the same sampler under its own ``clone_id``, and
numbers its ``seq_id`` s from ``clone_id * 1e9``, so clones never reuse each other's. The id is
assigned by the server (``join_sampling_session``) when ``client/config`` announces
``sample_join_sampling_session``, else drawn at random from 1..1e9 (0 is the original's).

Restoring attaches to the session without owning it (protocol §2, the "shadow holder"): the
JWT exchange when announced, one heartbeat to prove the session is alive, then a tree of its
own (ServiceActor, SamplingActor, heartbeat thread; no ``create_session``, no ``finish``).
Clients restored in one process for the same session and Config share one such tree, which
closes with the last of them. Bad handles fail here, clearly: malformed text is a
``ValidationError``; a session or sampler the server does not know (a handle from another
server, or made with another key) a ``NotFoundError``; a session that ended a ``GoneError``.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson

from tinkex_actors import _constants as c
from tinkex_actors import _endpoints as ep
from tinkex_actors._credentials import Origin, read_stored_key
from tinkex_actors._logging import get_logger
from tinkex_actors._redact import fingerprint
from tinkex_actors.actors import _fork
from tinkex_actors.actors._base import ActorHandle
from tinkex_actors.actors._runtime import Runtime
from tinkex_actors.actors._sampler_state import SamplerState
from tinkex_actors.actors._service import ServiceActor, release_child, send_to_service
from tinkex_actors.actors._session import Heartbeat, attach_session
from tinkex_actors.actors._tenant import tenants
from tinkex_actors.config import Config
from tinkex_actors.errors import (
    APIStatusError,
    ConfigError,
    GoneError,
    NotFoundError,
    ResponseDecodeError,
    ValidationError,
)
from tinkex_actors.transport import HTTPTransport
from tinkex_actors.types import ClientConfigResponse, GetSamplerResponse
from tinkex_actors.wire import decode_json, from_jsonable, to_jsonable

if TYPE_CHECKING:
    from tinkex_actors._service_client import _Tree

__all__ = [
    "PickledSampler",
    "Shadow",
    "Target",
    "encode_handle",
    "open_restored",
    "parse_handle",
    "pickled",
    "release_later",
    "target_of",
]

_JOIN_PATH: Final = ep.JOIN_SAMPLING_SESSION.path()
# client_counter * 1e9 must stay a valid int64 seq_id.
_MAX_CLIENT_COUNTER: Final = (2**63 - 1) // c.SAMPLE_SEQ_ID_STRIDE - 1
# Config options that are credentials: carried by source, never copied with the others.
_CREDENTIAL_OPTIONS: Final = frozenset({"api_key", "credential_cmd"})


# ---------------------------------------------------------------------------- what a clone needs
@attrs.frozen
class Target:
    """The sampler a restored client samples, and how its server was configured.

    Attributes:
        base_url: the server the handle was made for.
        session_id: the session the sampler belongs to.
        sampler_id: the sampling session id.
        base_model: the sampler's base model (as the handle says; the server's answer wins).
        announced: the server's ``client/config`` answer, as JSON.
    """

    base_url: str
    session_id: str
    sampler_id: str
    base_model: str | None
    announced: dict[str, Any]


def target_of(state: SamplerState, base_model: str | None) -> Target:
    """The :class:`Target` of a live sampling client's state."""
    runtime = state.runtime
    return Target(
        base_url=runtime.config.base_url,
        session_id=runtime.session_id,
        sampler_id=state.sampler_id,
        base_model=base_model,
        announced=to_jsonable(runtime.announced),
    )


def encode_handle(target: Target) -> str:
    """The handle string: base64url JSON with the official SDK's field names (no credential)."""
    payload = {
        "session_id": target.session_id,
        "sampling_session_id": target.sampler_id,
        "holder": {
            "base_url": target.base_url,
            # Config.default_headers may hold secrets: a handle carries none.
            "default_headers_overrides": {},
            "client_config": target.announced,
            "client_dynamic_config": {},
            "api_key": None,
        },
        "base_model": target.base_model,
        "record_stability_info": False,
    }
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode("ascii")


def parse_handle(handle: object) -> Target:
    """Read a handle made by :func:`encode_handle` (or by the official SDK).

    Raises:
        ValidationError: (``handle``) not a handle; the message says what is missing.
    """
    if not isinstance(handle, str):
        raise ValidationError(
            f"expected the str of get_sampler_handle(), got {type(handle).__name__}",
            field="handle",
        )
    try:
        data = orjson.loads(base64.urlsafe_b64decode(handle.strip().encode("ascii")))
    except (binascii.Error, ValueError, UnicodeEncodeError, orjson.JSONDecodeError):
        raise ValidationError(
            "not a sampler handle (expected base64url JSON from get_sampler_handle())",
            field="handle",
        ) from None
    holder = data.get("holder") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(holder, dict):
        raise ValidationError("not a sampler handle (no 'holder' object)", field="handle")
    fields = {
        "session_id": data.get("session_id"),
        "sampling_session_id": data.get("sampling_session_id"),
        "holder.base_url": holder.get("base_url"),
    }
    for name, value in fields.items():
        if not isinstance(value, str) or not value:
            raise ValidationError(f"the handle has no {name!r} string", field="handle")
    announced = holder.get("client_config", {})
    base_model = data.get("base_model")
    if not isinstance(announced, dict) or not (base_model is None or isinstance(base_model, str)):
        raise ValidationError(
            "the handle's 'holder.client_config' must be an object and 'base_model' a str",
            field="handle",
        )
    return Target(
        base_url=str(holder["base_url"]),
        session_id=str(data["session_id"]),
        sampler_id=str(data["sampling_session_id"]),
        base_model=base_model,
        announced=announced,
    )


# ---------------------------------------------------------------------------- pickling
@attrs.frozen
class PickledSampler:
    """What ``pickle.dumps(sampling_client)`` holds (see the module docstring).

    Attributes:
        target: the sampler.
        options: the Config's options except its credentials.
        key: ``("env", variable, fingerprint)``, ``("file", path, fingerprint)``,
            ``("given", key, "")`` or None (no key).
        command: the credential command line, or None.
        command_origin: ``(kind, detail)`` of the command's :class:`Origin`.
    """

    target: Target
    options: dict[str, Any]
    key: tuple[str, str, str] | None
    command: str | None
    command_origin: tuple[str, str] | None


def pickled(state: SamplerState, base_model: str | None) -> PickledSampler:
    """The pickle payload of a live sampling client's state."""
    config = state.runtime.config
    options: dict[str, Any] = {}
    for field in attrs.fields(Config):
        if not field.init or field.name in _CREDENTIAL_OPTIONS:
            continue
        value = getattr(config, field.name)
        options[field.name] = dict(value) if field.name in _MAPPING_OPTIONS else value
    key: tuple[str, str, str] | None = None
    if config.api_key is not None:
        origin = config.api_key_origin
        if origin is not None and origin.kind in ("env", "file"):
            key = (origin.kind, origin.detail, fingerprint(config.api_key))
        else:
            key = ("given", config.api_key, "")  # no other source to name
    cmd_origin = config.credential_cmd_origin
    return PickledSampler(
        target=target_of(state, base_model),
        options=options,
        key=key,
        command=config.credential_cmd,
        command_origin=None if cmd_origin is None else (cmd_origin.kind, cmd_origin.detail),
    )


_MAPPING_OPTIONS: Final = frozenset({"default_headers", "user_metadata"})


def config_of(payload: PickledSampler) -> Config:
    """Rebuild the pickled client's Config in this process, reading its key's source.

    Raises:
        ConfigError: the key's source holds no key here, or another one than in the process
            that pickled the client.
    """
    key: str | None = None
    key_origin: Origin | None = None
    if payload.key is not None:
        kind, detail, print_ = payload.key
        if kind == "given":
            key, key_origin = detail, Origin("given", "api_key")
        else:
            key_origin = Origin(kind, detail)
            if kind == "env":
                key = os.environ.get(detail, "").strip() or None
            else:
                key = read_stored_key(Path(detail))
            where = key_origin.describe()
            if key is None:
                raise ConfigError(
                    "api_key",
                    f"the pickled sampling client takes its key from {where}, which holds "
                    "none in this process",
                )
            if fingerprint(key) != print_:
                raise ConfigError(
                    "api_key",
                    f"the pickled sampling client takes its key from {where}, which holds "
                    "another key in this process than in the one that pickled it",
                )
    config = Config(api_key=key, credential_cmd=payload.command, **payload.options)
    if payload.command_origin is not None:
        object.__setattr__(config, "_cmd_origin", Origin(*payload.command_origin))
    if key_origin is not None:
        object.__setattr__(config, "_key_origin", key_origin)
    return config


# ---------------------------------------------------------------------------- restored trees
class Shadow:
    """The tree of restored clients of one (session, Config) in this process (shared).

    Attributes:
        key: ``(session_id, config)``.
        tree: the ServiceClient-like tree attached to the session (never finishes it).
        users: restored clients using it.
    """

    __slots__ = ("key", "tree", "users")

    def __init__(self, key: tuple[str, Config], tree: _Tree) -> None:
        self.key = key
        self.tree = tree
        self.users = 0

    @property
    def runtime(self) -> Runtime:
        """The tree's runtime."""
        return self.tree.runtime

    def release(self) -> None:
        """One restored client fewer; the last one closes the tree (its threads joined)."""
        with _lock:
            self.users -= 1
            last = self.users <= 0
            if last and _shadows.get(self.key) is self:
                del _shadows[self.key]
        if last:
            self.tree.close(c.ACTOR_STOP_TIMEOUT)


_lock = threading.RLock()
_shadows: dict[tuple[str, Config], Shadow] = {}


def _forget_after_fork() -> None:
    # The parent's trees are the parent's: the child must not close (finish) them at exit.
    global _lock
    _lock = threading.RLock()
    _shadows.clear()
    from tinkex_actors._service_client import _open_trees

    _open_trees.clear()


_fork.on_fork(_forget_after_fork)


def _restated(exc: APIStatusError, message: str) -> APIStatusError:
    # The same status error, with a message that says what it means for a restored client.
    return type(exc)(
        message,
        status_code=exc.status_code,
        body=exc.body,
        headers=exc.headers,
        method=exc.method,
        path=exc.path,
    )


def _attach(config: Config, target: Target, announced: ClientConfigResponse) -> Shadow:
    key = (target.session_id, config)
    with _lock:
        shadow = _shadows.get(key)
        if shadow is not None and not shadow.tree.closed:
            shadow.users += 1
            return shadow
    tree = _open_tree(config, target, announced)
    spare: _Tree | None = tree
    with _lock:
        shadow = _shadows.get(key)
        if shadow is None or shadow.tree.closed:
            shadow = _shadows[key] = Shadow(key, tree)
            spare = None
        shadow.users += 1
    if spare is not None:  # another thread attached first: use its tree
        spare.close(c.ACTOR_STOP_TIMEOUT)
    return shadow


def _open_tree(config: Config, target: Target, announced: ClientConfigResponse) -> _Tree:
    from tinkex_actors._service_client import _open_trees, _Tree

    tenant = tenants.acquire(config)
    try:
        attach_session(tenant.transport, target.session_id, announced)
    except NotFoundError as exc:
        tenants.release(tenant, c.ACTOR_STOP_TIMEOUT)
        raise _restated(
            exc,
            f"the server at {config.base_url} does not know session {target.session_id} of "
            f"sampler {target.sampler_id}: the handle was made for {target.base_url}, with "
            "another API key, or on a server that has since lost its data",
        ) from exc
    except GoneError as exc:
        tenants.release(tenant, c.ACTOR_STOP_TIMEOUT)
        raise _restated(
            exc,
            f"session {target.session_id} of sampler {target.sampler_id} has ended (its "
            "ServiceClient was closed, or it expired): create a new sampling client and pass "
            "on its handle",
        ) from exc
    except BaseException:
        tenants.release(tenant, c.ACTOR_STOP_TIMEOUT)
        raise
    runtime = Runtime(config, tenant, target.session_id, announced)
    handle = ActorHandle("service", f"{target.session_id}:restored")
    runtime.service_handle = handle
    ServiceActor.start(runtime, handle, c.SUPERVISOR_MAX_RESTARTS, c.SUPERVISOR_RESTART_PERIOD)
    heartbeat = Heartbeat(tenant.transport, target.session_id, config.heartbeat_interval)
    heartbeat.start()
    tree = _Tree(runtime, tenant, heartbeat, None, owns_session=False)
    _open_trees.add(tree)
    return tree


def open_restored(target: Target, config: Config) -> tuple[SamplerState, Shadow]:
    """Attach to ``target``'s session and adopt its sampler as a clone (blocking).

    Returns:
        The clone's state (published, its ``clone_id`` set) and the tree it lives in (one
        user counted: release it when the client closes).

    Raises:
        ValidationError: ``target.announced`` is not a client/config answer.
        NotFoundError / GoneError: see the module docstring.
        APIError / ConfigError: the server or the credential failed.
    """
    try:
        announced = from_jsonable(ClientConfigResponse, target.announced)
    except ResponseDecodeError as exc:
        raise ValidationError(
            f"the handle's client_config is not a client/config answer: {exc}", field="handle"
        ) from None
    shadow = _attach(config, target, announced)
    try:
        runtime = shadow.runtime
        info = _sampler_info(runtime.transport, target)
        clone_id = _clone_id(runtime.transport, announced, target.sampler_id)
        adopted = send_to_service(
            runtime,
            ServiceActor.adopt_sampling,
            (target.sampler_id, info.base_model, info.model_path),
        )
        state: SamplerState = adopted.result(config.timeout)
        state.use_clone_id(clone_id)
    except BaseException:
        shadow.release()
        raise
    get_logger("sampling").debug(
        "tinkex.sampling.restored",
        sampler_id=target.sampler_id,
        clone_id=clone_id,
        tenant_id=config.tenant_id,
    )
    return state, shadow


def _sampler_info(transport: HTTPTransport, target: Target) -> GetSamplerResponse:
    try:
        reply = transport.request("GET", ep.GET_SAMPLER.path(sampler_id=target.sampler_id))
    except NotFoundError as exc:
        raise _restated(
            exc,
            f"the server at {transport.config.base_url} does not know sampler "
            f"{target.sampler_id}: the handle was made for {target.base_url}, or with another "
            "API key",
        ) from exc
    return decode_json(GetSamplerResponse, reply.content)


def _clone_id(transport: HTTPTransport, announced: ClientConfigResponse, sampler_id: str) -> int:
    if not announced.sample_join_sampling_session:
        return secrets.randbelow(c.SAMPLE_CLONE_ID_MAX) + 1
    body = {"sampling_session_id": sampler_id, "type": "join_sampling_session"}
    reply = transport.request("POST", _JOIN_PATH, body=orjson.dumps(body))
    data = reply.json()
    counter = data.get("client_counter") if isinstance(data, dict) else None
    if (
        isinstance(counter, bool)
        or not isinstance(counter, int)
        or not 0 <= counter <= _MAX_CLIENT_COUNTER
    ):
        raise ResponseDecodeError(
            f"POST {_JOIN_PATH}: no usable client_counter",
            body=reply.content,
            expected=f'{{"client_counter": int in 0..{_MAX_CLIENT_COUNTER}}}',
            method="POST",
            path=_JOIN_PATH,
        )
    return counter


def release_restored(runtime: Runtime, handle: ActorHandle, shadow: Shadow) -> None:
    """Release a restored client now (its ``close()``): its actor, then its tree's user."""
    release_child(runtime, handle)
    shadow.release()


def release_later(runtime: Runtime, handle: ActorHandle, shadow: Shadow) -> None:
    """Release a restored client that was garbage collected.

    The collector may run this inside any code, a lock holder's included, so the tree (whose
    closing joins threads and takes registry locks) is closed from a short-lived thread.
    """
    release_child(runtime, handle)
    threading.Thread(target=shadow.release, name="tinkex-restored-release", daemon=True).start()
