"""The two optimizer families of an adapter, AdamW and Dimuon, and their checkpoint files.

Both start with global gradient-norm clipping (``grad_clip_norm`` > 0: gradients are scaled so
their global L2 norm is at most that) and report ``grad_norm:mean``, the norm before clipping.

**AdamW** is ``torch.optim.AdamW`` (decoupled weight decay), as the official service documents.

**Dimuon** (``{"type": "dimuon", "version": 1}``) is a Muon-family optimizer for LoRA matrices.
Thinking Machines describes it through its parameters only (momentum ``beta1``; a row and
column preconditioner; a matrix-sign step with an internal iteration count; the learning rate
applied to a direction of Frobenius norm ``sqrt(rank)``); version 1 is the parameter set of SDK
0.38 (``learning_rate``, ``grad_clip_norm``, ``beta1``). Following Muon (Keller Jordan, 2024)
and Thinking Machines' *Modular Manifolds* (2025), both built on the matrix sign of the
momentum, one step here is, per LoRA matrix ``W`` (``A`` is
``[rank, in]``, ``B`` is ``[out, rank]``) with gradient ``G``:

1. ``M = beta1 * M + (1 - beta1) * G`` (momentum, an exponential moving average);
2. two-sided diagonal equilibration: ``P[i, j] = M[i, j] / ((r_i + s) (c_j + s)) ** (1/4)``
   with ``r_i``, ``c_j`` the mean squares of row ``i`` and column ``j`` of ``M`` and ``s`` the
   mean square of ``M`` (the damping: it keeps near-empty rows and columns from blowing up);
3. ``O = msign(P)``, the orthogonal polar factor, by five quintic Newton-Schulz iterations
   (Muon's coefficients 3.4445, -4.7750, 2.0315) on ``P / ||P||_F``;
4. ``W -= learning_rate * sqrt(rank) * O / ||O||_F``.

A zero momentum gives no update. Everything is deterministic for a fixed thread count. The
official service's numbers are not published, so only the behaviour (not the bits) matches.

Checkpoint files (``optimizer.safetensors``, metadata ``optimizer`` = the format below): AdamW
``<key>.exp_avg``, ``<key>.exp_avg_sq``, ``<key>.step``; Dimuon ``<key>.momentum``,
``<key>.step``. A checkpoint of one family does not load into an adapter of the other.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tinkex_actors.server.engine_api import (
    OPTIMIZER_STATE_FILE,
    AdamSpec,
    DimuonSpec,
    EngineUserError,
    OptimizerSpec,
)

__all__ = [
    "AdamWOptimizer",
    "DimuonOptimizer",
    "Optimizer",
    "new_optimizer",
    "optimizer_tensors",
    "read_optimizer_file",
    "write_optimizer_file",
]

#: Checkpoint format name (safetensors metadata ``optimizer``) and per-parameter fields.
_FORMATS = {"adamw": "tinkex-adamw-1", "dimuon": "tinkex-dimuon-1"}
_FIELDS = {"adamw": ("exp_avg", "exp_avg_sq", "step"), "dimuon": ("momentum", "step")}
_NAMES = {"adamw": "AdamW", "dimuon": "Dimuon"}
#: Muon's quintic Newton-Schulz coefficients and iteration count (the matrix-sign step).
_NS_COEFFS = (3.4445, -4.7750, 2.0315)
_NS_STEPS = 5
_NORM_EPS = 1e-7
#: Keeps the equilibration finite for an all-zero momentum (then nothing moves anyway).
_TINY = 1e-30


def _clip_(grads: Sequence[Any], max_norm: float) -> float:
    """Global L2 norm of ``grads``; scales them in place to at most ``max_norm`` (> 0)."""
    norm = float(
        torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    )
    if max_norm > 0 and norm > max_norm:
        torch._foreach_mul_(list(grads), max_norm / (norm + 1e-6))
    return norm


class Optimizer(abc.ABC):
    """An adapter's optimizer: one family, its state, its checkpoint tensors."""

    family: str

    def __init__(self, params: Sequence[Any]) -> None:
        self.params = list(params)

    @abc.abstractmethod
    def step(self, params: AdamSpec | DimuonSpec) -> dict[str, float]:
        """One step on the parameters' ``.grad`` (which the caller zeroes afterwards)."""

    @abc.abstractmethod
    def state(self, param: Any) -> dict[str, Any]:
        """The checkpoint fields of ``param`` (empty before its first step)."""

    @abc.abstractmethod
    def set_state(self, param: Any, fields: Mapping[str, Any]) -> None:
        """Restore ``param``'s fields read from a checkpoint."""

    def check(self, params: AdamSpec | DimuonSpec) -> None:
        """EngineUserError unless ``params`` are this family's step parameters."""
        if not OptimizerSpec(self.family).accepts(params):
            got = "AdamParams (adamw)" if isinstance(params, AdamSpec) else "DimuonParams (dimuon)"
            raise EngineUserError(
                f"optim_step: this model was created with the {_NAMES[self.family]} optimizer "
                f"({self.family}) but the step carries {got}; send the parameters of the "
                "optimizer chosen at create_model"
            )


class AdamWOptimizer(Optimizer):
    """``torch.optim.AdamW`` with global gradient clipping."""

    family = "adamw"

    def __init__(self, params: Sequence[Any]) -> None:
        super().__init__(params)
        self._adam = torch.optim.AdamW(self.params, lr=0.0, weight_decay=0.0, foreach=True)

    def step(self, params: AdamSpec | DimuonSpec) -> dict[str, float]:
        self.check(params)
        assert isinstance(params, AdamSpec)
        norm = _clip_([p.grad for p in self.params], params.grad_clip_norm)
        for group in self._adam.param_groups:
            group["lr"] = params.learning_rate
            group["betas"] = (params.beta1, params.beta2)
            group["eps"] = params.eps
            group["weight_decay"] = params.weight_decay
        self._adam.step()
        return {"grad_norm:mean": norm}

    def state(self, param: Any) -> dict[str, Any]:
        state = self._adam.state.get(param)
        if not state:
            return {}
        return {
            "exp_avg": state["exp_avg"].detach().clone(),
            "exp_avg_sq": state["exp_avg_sq"].detach().clone(),
            # safetensors stores the scalar step as a one-element vector.
            "step": state["step"].detach().clone().reshape(1),
        }

    def set_state(self, param: Any, fields: Mapping[str, Any]) -> None:
        self._adam.state[param] = {
            "step": fields["step"].clone().reshape(()),
            "exp_avg": fields["exp_avg"].clone(),
            "exp_avg_sq": fields["exp_avg_sq"].clone(),
        }


def _matrix_sign(matrix: Any) -> Any:
    """The orthogonal polar factor of ``matrix`` (approximately), by Newton-Schulz."""
    a, b, c = _NS_COEFFS
    x = matrix / (torch.linalg.matrix_norm(matrix) + _NORM_EPS)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.t()
    for _ in range(_NS_STEPS):
        gram = x @ x.t()
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.t() if tall else x


def dimuon_direction(momentum: Any, rank: int) -> Any:
    """The Dimuon update direction of one matrix (Frobenius norm ``sqrt(rank)``; zero for a
    zero momentum)."""
    squares = momentum * momentum
    damping = squares.mean()
    if float(damping) == 0.0:
        return torch.zeros_like(momentum)
    rows = (squares.mean(dim=1, keepdim=True) + damping + _TINY) ** 0.25
    cols = (squares.mean(dim=0, keepdim=True) + damping + _TINY) ** 0.25
    sign = _matrix_sign(momentum / (rows * cols))
    return sign * (math.sqrt(rank) / (float(torch.linalg.matrix_norm(sign)) + _NORM_EPS))


class DimuonOptimizer(Optimizer):
    """Dimuon v1 (see the module docstring) on LoRA matrices of rank ``rank``."""

    family = "dimuon"

    def __init__(self, params: Sequence[Any], rank: int) -> None:
        super().__init__(params)
        self._rank = rank
        self._momentum: dict[int, Any] = {}
        self._steps: dict[int, int] = {}

    def step(self, params: AdamSpec | DimuonSpec) -> dict[str, float]:
        self.check(params)
        assert isinstance(params, DimuonSpec)
        norm = _clip_([p.grad for p in self.params], params.grad_clip_norm)
        with torch.no_grad():
            for p in self.params:
                key = id(p)
                momentum = self._momentum.get(key)
                if momentum is None:
                    momentum = self._momentum[key] = torch.zeros_like(p)
                momentum.mul_(params.beta1).add_(p.grad, alpha=1 - params.beta1)
                self._steps[key] = self._steps.get(key, 0) + 1
                p.sub_(dimuon_direction(momentum, self._rank), alpha=params.learning_rate)
        return {"grad_norm:mean": norm}

    def state(self, param: Any) -> dict[str, Any]:
        key = id(param)
        if key not in self._momentum:
            return {}
        return {
            "momentum": self._momentum[key].detach().clone(),
            "step": torch.tensor([float(self._steps[key])]),
        }

    def set_state(self, param: Any, fields: Mapping[str, Any]) -> None:
        self._momentum[id(param)] = fields["momentum"].clone()
        self._steps[id(param)] = int(fields["step"].reshape(()).item())


def new_optimizer(spec: OptimizerSpec, params: Sequence[Any], rank: int) -> Optimizer:
    """Fresh state of ``spec``'s family for ``params`` (validated by the caller)."""
    if spec.type == "dimuon":
        return DimuonOptimizer(params, rank)
    return AdamWOptimizer(params)


def optimizer_tensors(optimizer: Optimizer, keyed: Mapping[str, Any]) -> dict[str, Any]:
    """Copies of ``optimizer``'s state as ``<PEFT key>.<field>`` tensors (parameters never
    stepped are absent)."""
    tensors: dict[str, Any] = {}
    for key, param in keyed.items():
        for name, value in optimizer.state(param).items():
            tensors[f"{key}.{name}"] = value
    return tensors


def write_optimizer_file(directory: Path, family: str, tensors: Mapping[str, Any]) -> None:
    """Write :func:`optimizer_tensors` of a ``family`` optimizer into ``directory``."""
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        str(directory / OPTIMIZER_STATE_FILE),
        metadata={"format": "pt", "optimizer": _FORMATS[family]},
    )


def read_optimizer_file(
    directory: Path, family: str, shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, dict[str, Any]]:
    """Per PEFT key, the saved fields of ``family``'s state, checked against ``shapes``.

    Raises:
        EngineUserError: no state file, a file of the other family, or missing / misshapen
            tensors.
    """
    path = directory / OPTIMIZER_STATE_FILE
    if not path.is_file():
        raise EngineUserError("checkpoint has no optimizer state (it was saved without it)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            raw = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (OSError, ValueError, RuntimeError) as exc:
        raise EngineUserError(f"optimizer state {path.name} unreadable: {exc}") from exc
    # Files written before Dimuon existed carry no format: they hold AdamW state.
    saved = next(
        (fam for fam, fmt in _FORMATS.items() if fmt == metadata.get("optimizer")), "adamw"
    )
    if saved != family:
        raise EngineUserError(
            f"checkpoint holds {_NAMES[saved]} ({saved}) optimizer state but this model uses "
            f"{_NAMES[family]} ({family}); load it without the optimizer state, or into a model "
            f"created with optimizer_config {{'type': {saved!r}}}"
        )
    out: dict[str, dict[str, Any]] = {}
    for key, shape in shapes.items():
        names = [f"{key}.{name}" for name in _FIELDS[family]]
        if not any(name in raw for name in names):
            continue
        fields: dict[str, Any] = {}
        for name in _FIELDS[family]:
            tensor = raw.get(f"{key}.{name}")
            wanted = 1 if name == "step" else math.prod(shape)
            if (
                tensor is None
                or tensor.numel() != wanted
                or (name != "step" and tuple(tensor.shape) != shape)
            ):
                raise EngineUserError(f"optimizer state for {key!r} is incomplete or misshapen")
            fields[name] = tensor.float()
        out[key] = fields
    return out
