"""What a ServiceClient does when the server loses its session, a model or a sampler.

::

    from tinkex_actors import ServiceClient
    from tinkex_actors.recovery import RecoveryPolicy

    service = ServiceClient(config, recovery=RecoveryPolicy())   # also restore lost models

A :class:`RecoveryPolicy` is given to :class:`~tinkex_actors.ServiceClient`. Without one the
client recovers *sessions* (a new session, sampling clients re-created in it, training
clients whose model survived carry on) but never re-creates a model: re-creating one
silently changes training (what was trained since the last checkpoint is gone), so
restoring models is opt-in. ``RecoveryPolicy.off()`` turns recovery off altogether: every
call that meets lost state then fails with a typed
:class:`~tinkex_actors.errors.StateLostError`.

The full behaviour, the events and the log lines are described in ``docs/recovery.md``.
"""

from __future__ import annotations

from typing import Any

import attrs

from tinkex_actors import _constants as c
from tinkex_actors.errors import ValidationError

__all__ = ["DEFAULT_POLICY", "RecoveryPolicy", "Restored"]


def _positive(field: str, value: Any, *, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
        wanted = "a positive int" if integer else "a positive number of seconds"
        raise ValidationError(f"expected {wanted}, got {value!r}", field=field)


def _flag(field: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValidationError(f"expected a bool, got {type(value).__name__}", field=field)


@attrs.frozen
class RecoveryPolicy:
    """How a ServiceClient recovers lost server state. Immutable; validated on creation.

    Attributes:
        sessions: when the server says the session is gone (410 or an unknown session on a
            heartbeat or a call, e.g. after it expired or the server lost its data), create a
            new session and re-bind the clients: sampling clients re-create their sampling
            sessions (same base model or weights path) and resubmit the samples that met the
            loss; training clients whose model lives on continue. False: calls fail with
            :class:`~tinkex_actors.errors.SessionLostError` /
            :class:`~tinkex_actors.errors.ModelLostError` /
            :class:`~tinkex_actors.errors.SamplerLostError`.
        restore_models: restore a training client whose model is gone (or whose state is
            unknown after a server restart) from its last ``save_state`` (else the checkpoint
            it was created from, else as it was created), as a new model under the same
            client object. The calls that met the loss fail with ``ModelLostError``
            (``restoring=True``); :meth:`TrainingClient.resume` waits for the restore and
            lets calls through again. False: the client's calls fail with ``ModelLostError``.
        optimizer: restore the optimizer state along with the weights (a ``save_state``
            checkpoint holds both); False restores the weights with a fresh optimizer.
        max_attempts: tries of each recovery step (creating the session, a sampling session,
            a model) before it is given up; transient failures between tries back off.
        backoff: seconds before the second try, doubled before each further one.
        max_backoff: the longest back-off between tries, in seconds.
        restore_timeout: the longest wait for one restore's model to be ready, in seconds.
    """

    sessions: bool = attrs.field(default=True)
    restore_models: bool = attrs.field(default=True)
    optimizer: bool = attrs.field(default=True)
    max_attempts: int = attrs.field(default=c.RECOVERY_MAX_ATTEMPTS)
    backoff: float = attrs.field(default=c.RECOVERY_BACKOFF)
    max_backoff: float = attrs.field(default=c.RECOVERY_MAX_BACKOFF)
    restore_timeout: float = attrs.field(default=c.RECOVERY_RESTORE_TIMEOUT)

    def __attrs_post_init__(self) -> None:
        _flag("sessions", self.sessions)
        _flag("restore_models", self.restore_models)
        _flag("optimizer", self.optimizer)
        _positive("max_attempts", self.max_attempts, integer=True)
        _positive("backoff", self.backoff)
        _positive("max_backoff", self.max_backoff)
        _positive("restore_timeout", self.restore_timeout)
        if self.restore_models and not self.sessions:
            raise ValidationError(
                "restoring models needs session recovery (a model lost with its session is "
                "restored into a new one): set sessions=True or restore_models=False",
                field="restore_models",
            )

    @classmethod
    def off(cls) -> RecoveryPolicy:
        """No recovery: calls that meet lost state fail with a typed StateLostError."""
        return cls(sessions=False, restore_models=False)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (1 for the first)."""
        return float(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))


#: What a ServiceClient uses without a policy: sessions are recovered, models are not restored.
DEFAULT_POLICY = RecoveryPolicy(restore_models=False)


@attrs.frozen
class Restored:
    """What :meth:`TrainingClient.resume` reports about a restore.

    Attributes:
        model_id: the new model (the client's ``model_id`` from now on).
        previous_model_id: the model that was lost.
        checkpoint: the checkpoint the model was restored from, None when it was re-created
            as it was first created (no checkpoint was left).
        optim_steps: optimizer steps the client had submitted when that state was saved (0
            for a re-created model): the step to continue from.
        optimizer: whether the optimizer state was restored too.
    """

    model_id: str
    previous_model_id: str
    checkpoint: str | None
    optim_steps: int
    optimizer: bool
