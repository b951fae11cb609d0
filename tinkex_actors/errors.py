"""Every exception tinkex_actors raises, in one hierarchy.

::

    TinkexError
    ├── ConfigError (ValueError)              a Config option is wrong; names the field
    ├── ValidationError (ValueError)          bad input, caught before anything is sent
    │   └── InvalidTinkerPathError            a malformed ``tinker://`` path
    ├── MissingDependencyError (ImportError)  an optional extra is not installed; names it
    ├── ClientClosedError (RuntimeError)      a call on a closed client
    ├── QueueFullError (RuntimeError)         a bounded sample queue is full
    ├── TinkexTimeoutError (TimeoutError)     a wait ran out of time
    ├── ActorCrashedError                     the actor serving a call crashed mid-call
    │   └── ChildFailedError                  ... and its supervisor gave up restarting it
    ├── StateLostError                        server-side state a client relied on is gone
    │   ├── SessionLostError                  the session ended and was not replaced
    │   ├── ModelLostError                    a training client's model (or its state) is gone
    │   └── SamplerLostError                  a sampling client's sampling session is gone
    ├── APIError                              anything the server or the network did
    │   ├── APIConnectionError                the connection failed or dropped
    │   │   └── APITimeoutError (TinkexTimeoutError)   the HTTP request timed out
    │   ├── APIStatusError                    a non-2xx answer (``status_code``, ``body``)
    │   │   ├── BadRequestError               400
    │   │   ├── AuthenticationError           401
    │   │   ├── BillingError                  402
    │   │   ├── PermissionDeniedError         403
    │   │   ├── NotFoundError                 404
    │   │   ├── ConflictError                 409
    │   │   ├── GoneError                     410
    │   │   ├── PayloadTooLargeError          413
    │   │   ├── UnprocessableEntityError      422
    │   │   ├── RateLimitError                429
    │   │   └── InternalServerError           >= 500
    │   ├── ResponseDecodeError               a 2xx answer we could not understand
    │   ├── ResponseTooLargeError             an answer above ``Config.max_response_bytes``
    │   └── RequestFailedError                the server ran the request and it failed
    ├── TokenizerError                        a tokenizer could not be found or loaded
    ├── CheckpointDownloadError               a checkpoint archive could not be fetched
    │   ├── CheckpointExistsError (FileExistsError)   output exists and ``force`` is off
    │   └── UnsafeArchiveError                an archive member would escape its directory
    └── EmbeddedServerError (RuntimeError)    the embedded server did not start or stop

Rules every raiser follows:

* Messages name what is wrong (the field, the value's type, the expected form).
* Server bodies are kept only as a bounded excerpt (:data:`BODY_EXCERPT_LIMIT` characters).
* Nothing here ever holds or prints an API key: build messages from redacted values only.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Mapping
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "ActorCrashedError",
    "AuthenticationError",
    "BODY_EXCERPT_LIMIT",
    "BadRequestError",
    "BillingError",
    "CheckpointDownloadError",
    "CheckpointExistsError",
    "ChildFailedError",
    "ClientClosedError",
    "ConfigError",
    "ConflictError",
    "EmbeddedServerError",
    "GoneError",
    "InternalServerError",
    "InvalidTinkerPathError",
    "MissingDependencyError",
    "ModelLostError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "QueueFullError",
    "RateLimitError",
    "RequestErrorCategory",
    "RequestFailedError",
    "ResponseDecodeError",
    "ResponseTooLargeError",
    "SamplerLostError",
    "SessionLostError",
    "StateLostError",
    "TinkexError",
    "TinkexTimeoutError",
    "TokenizerError",
    "UnprocessableEntityError",
    "UnsafeArchiveError",
    "ValidationError",
    "excerpt",
    "status_error_class",
]

#: The most characters of a server body kept in an exception.
BODY_EXCERPT_LIMIT = 500


def excerpt(body: bytes | str | None, limit: int = BODY_EXCERPT_LIMIT) -> str:
    """Return a printable, bounded excerpt of a response body for error messages."""
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes | bytearray) else body
    if len(text) > limit:
        return text[:limit] + f"... ({len(text) - limit} more characters)"
    return text


class TinkexError(Exception):
    """Base class of every error raised by tinkex_actors."""


class ConfigError(TinkexError, ValueError):
    """A configuration option has a wrong type or value.

    Attributes:
        field: the option's name (``"timeout"``, ``"base_url"``, ...).
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"Config.{field}: {message}")


class ValidationError(TinkexError, ValueError):
    """Input rejected on the client, before any request was sent.

    Attributes:
        field: dotted path of the offending argument or attribute (``"data[3].loss_fn_inputs"``),
            or ``None`` when the problem is not about one field.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class InvalidTinkerPathError(ValidationError):
    """A ``tinker://`` path does not have the form ``tinker://<run_id>/<kind>/<name>``."""


class MissingDependencyError(TinkexError, ImportError):
    """A feature needs an optional extra that is not installed; the message names the extra.

    Subclasses the builtin :class:`ImportError`, so ``except ImportError`` catches it.
    """


class ClientClosedError(TinkexError, RuntimeError):
    """The client (or the ServiceClient that owns it) was closed; make a new one."""


class QueueFullError(TinkexError, RuntimeError):
    """A sample could not be queued: the client's in-flight bound is reached and its queue
    of waiting samples (``Config.sample_max_queued``) is full. Nothing was sent."""


class TinkexTimeoutError(TinkexError, builtins.TimeoutError):
    """A wait ran out of time (a future's ``result(timeout)``, a deadline, an HTTP timeout).

    Subclasses the builtin :class:`TimeoutError`, so ``except TimeoutError`` catches it. A
    timed-out wait leaves the client usable; the request may still complete on the server.
    """


class ActorCrashedError(TinkexError):
    """The actor that was serving this call crashed before it finished.

    The call's outcome on the server is unknown. The supervisor restarts the actor; later calls
    on the same client go to the new instance.
    """


class ChildFailedError(ActorCrashedError):
    """A client's actor crashed more often than its restart policy allows; the client is dead."""


class StateLostError(TinkexError):
    """State on the server that a client relied on is gone (a session, a model, a sampler).

    What was lost and what to do is in the subclass and its message. With the ServiceClient's
    :class:`~tinkex_actors.recovery.RecoveryPolicy` the SDK replaces what it can; these errors
    reach a caller for calls that could not be carried over.

    Attributes:
        reason: why the server no longer has it (its answer, or what the SDK saw).
    """

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        self.reason = reason
        super().__init__(message)


class SessionLostError(StateLostError):
    """The ServiceClient's session ended on the server (expired, finished, or forgotten by a
    server that lost its data) and no new one was created: session recovery is off or
    failed. Close the ServiceClient and create a new one.

    Attributes:
        session_id: the session that was lost.
    """

    def __init__(self, message: str, *, session_id: str, reason: str | None = None) -> None:
        self.session_id = session_id
        super().__init__(message, reason=reason)


class ModelLostError(StateLostError):
    """A training client's model is gone from the server, or its state became unknown (a
    result that changes the model was lost in a server restart).

    Training since the last checkpoint is lost. When ``restoring`` is True the client is
    being (or has been) restored from ``checkpoint`` (``RecoveryPolicy.restore_models``):
    call :meth:`TrainingClient.resume` to wait for it and go on from there (its calls fail
    with this error until then). Otherwise the client is dead: create a new one, e.g. with
    ``create_training_client_from_state_with_optimizer(checkpoint)``.

    Attributes:
        model_id: the model that was lost.
        checkpoint: the client's last ``save_state`` path (or the checkpoint it was created
            from), None when it has none.
        optim_steps: optimizer steps the client had submitted when ``checkpoint`` was saved
            (0 for a restore from the model's creation), None when unknown.
        restoring: whether the client is restored automatically.
    """

    def __init__(
        self,
        message: str,
        *,
        model_id: str,
        checkpoint: str | None,
        optim_steps: int | None = None,
        restoring: bool = False,
        reason: str | None = None,
    ) -> None:
        self.model_id = model_id
        self.checkpoint = checkpoint
        self.optim_steps = optim_steps
        self.restoring = restoring
        super().__init__(message, reason=reason)


class SamplerLostError(StateLostError):
    """A sampling client's sampling session is gone and could not be created again: it held
    a snapshot of a live adapter (no path to rebuild it from), session recovery is off, or
    re-creating it failed. Create a new sampling client (e.g. from saved weights).

    Attributes:
        sampler_id: the sampling session that was lost.
    """

    def __init__(self, message: str, *, sampler_id: str, reason: str | None = None) -> None:
        self.sampler_id = sampler_id
        super().__init__(message, reason=reason)


class RequestErrorCategory(enum.StrEnum):
    """Why the server says a request failed (``category`` of a failed future)."""

    UNKNOWN = "unknown"
    SERVER = "server"
    USER = "user"

    @classmethod
    def parse(cls, value: object) -> RequestErrorCategory:
        """Map a wire value to a category; anything unknown becomes :attr:`UNKNOWN`."""
        try:
            return cls(str(value).lower())
        except ValueError:
            return cls.UNKNOWN


class APIError(TinkexError):
    """Something went wrong talking to the server.

    Attributes:
        method: HTTP method of the request, when known.
        path: request path (no query string, no host), when known.
    """

    def __init__(self, message: str, *, method: str | None = None, path: str | None = None) -> None:
        self.method = method
        self.path = path
        super().__init__(message)


class APIConnectionError(APIError):
    """The request could not be sent or its answer not received (refused, reset, dropped)."""


class APITimeoutError(APIConnectionError, TinkexTimeoutError):
    """The HTTP request timed out (connect or read)."""


class APIStatusError(APIError):
    """The server answered with a non-2xx status.

    Attributes:
        status_code: the HTTP status.
        body: a bounded excerpt of the response body (see :data:`BODY_EXCERPT_LIMIT`).
        headers: selected response headers (never request headers, so never the API key).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.body = excerpt(body)
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(message, method=method, path=path)


class BadRequestError(APIStatusError):
    """400: the server rejected the request as malformed."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing, malformed or unknown."""


class BillingError(APIStatusError):
    """402: the account cannot run this request (billing)."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not access this resource (or a signed URL was altered or expired)."""


class NotFoundError(APIStatusError):
    """404: no such resource (or it belongs to another tenant)."""


class ConflictError(APIStatusError):
    """409: the request conflicts with the resource's state."""


class GoneError(APIStatusError):
    """410: the resource (a session, a promise) expired."""


class PayloadTooLargeError(APIStatusError):
    """413: the request body exceeds the server's limit."""


class UnprocessableEntityError(APIStatusError):
    """422: the request was well-formed but semantically invalid."""


class RateLimitError(APIStatusError):
    """429: too many requests; retried automatically until the retry budget runs out."""


class InternalServerError(APIStatusError):
    """5xx: the server failed; retried automatically until the retry budget runs out."""


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: BillingError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    410: GoneError,
    413: PayloadTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error_class(status_code: int) -> type[APIStatusError]:
    """Return the :class:`APIStatusError` subclass for an HTTP status."""
    if status_code >= 500:
        return InternalServerError
    return _STATUS_CLASSES.get(status_code, APIStatusError)


class ResponseDecodeError(APIError):
    """A 2xx answer was malformed or of an unexpected shape.

    Attributes:
        body: a bounded excerpt of what the server sent.
        expected: the type or shape we expected (``"ForwardBackwardOutput (protobuf)"``).
    """

    def __init__(
        self,
        message: str,
        *,
        body: bytes | str | None = None,
        expected: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        self.body = excerpt(body)
        self.expected = expected
        shown = f"{message} (expected {expected})" if expected else message
        if self.body:
            shown = f"{shown}; body: {self.body}"
        super().__init__(shown, method=method, path=path)


class ResponseTooLargeError(APIError):
    """An answer's body is larger than ``Config.max_response_bytes`` (nothing was kept).

    Attributes:
        limit: the configured limit in bytes.
        size: the announced size (``Content-Length``), or None when the body was cut off
            while streaming in.
    """

    def __init__(
        self,
        message: str,
        *,
        limit: int,
        size: int | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        self.limit = limit
        self.size = size
        super().__init__(message, method=method, path=path)


class RequestFailedError(APIError):
    """The server accepted the request, ran it, and reports that it failed.

    Attributes:
        category: :class:`RequestErrorCategory` (``user`` means the input was at fault).
        request_id: the server's id of the failed request, when known.
        details: any further fields of the failure body.
    """

    def __init__(
        self,
        message: str,
        *,
        category: RequestErrorCategory = RequestErrorCategory.UNKNOWN,
        request_id: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self.category = category
        self.request_id = request_id
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(f"request failed ({category.value}): {message}")


class TokenizerError(TinkexError):
    """A tokenizer could not be resolved or loaded (offline and not in any local cache)."""


class EmbeddedServerError(TinkexError, RuntimeError):
    """The embedded server (``tinkex_actors.server.embedded``) did not start or stop as expected.

    The message ends with the tail of the server's log.
    """


class CheckpointDownloadError(TinkexError):
    """A checkpoint archive could not be downloaded or extracted."""


class CheckpointExistsError(CheckpointDownloadError, FileExistsError):
    """The output directory already holds this checkpoint; pass ``force=True`` to replace it."""


class UnsafeArchiveError(CheckpointDownloadError):
    """An archive member has an absolute path, ``..``, an outside link, or is a device/FIFO."""
