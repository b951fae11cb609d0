"""tinkex_actors: an actor-based Python SDK for the Tinker fine-tuning API.

Every client is a Pykka actor: a ServiceClient supervises TrainingClients (which serialize
their requests) and SamplingClients (stateless, lock-free fan-out). Every call returns an
:class:`ActorFuture`. See ``docs/`` for the guide and the API reference.

The public names are listed in ``__all__`` (kept sorted; a test checks it).
"""

from __future__ import annotations

from tinkex_actors import errors, telemetry, types
from tinkex_actors._sampling_client import SamplingClient
from tinkex_actors._service_client import ServiceClient
from tinkex_actors._training_client import TrainingClient
from tinkex_actors._version import __version__
from tinkex_actors.checkpoint_download import CheckpointDownload
from tinkex_actors.config import Config
from tinkex_actors.futures import ActorFuture
from tinkex_actors.recovery import RecoveryPolicy
from tinkex_actors.rest import RestClient
from tinkex_actors.tokenizer import Tokenizer

__all__ = [
    "ActorFuture",
    "CheckpointDownload",
    "Config",
    "RecoveryPolicy",
    "RestClient",
    "SamplingClient",
    "ServiceClient",
    "Tokenizer",
    "TrainingClient",
    "__version__",
    "errors",
    "telemetry",
    "types",
]
