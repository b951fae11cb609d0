"""The loss registry's formulas on torch tensors, with autograd.

The losses themselves (names, inputs, config defaults, formulas) live in
:mod:`tinkex_actors.server.engines.losses`; this module only supplies the torch side of its
:class:`~tinkex_actors.server.engines.losses.ArrayOps` interface.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from tinkex_actors.server.engines.losses import ArrayOps, LossSpec

__all__ = ["TORCH_OPS", "elementwise_loss"]


class _TorchOps:
    """:class:`ArrayOps` on torch tensors; ``stop`` detaches."""

    def exp(self, x: Any) -> Any:
        return torch.exp(x)

    def minimum(self, a: Any, b: Any) -> Any:
        if not torch.is_tensor(b):
            return torch.clamp(a, max=float(b))
        return torch.minimum(a, b)

    def clip(self, x: Any, low: Any, high: Any) -> Any:
        if not torch.is_tensor(low) and not torch.is_tensor(high):
            return torch.clamp(x, float(low), float(high))
        low_t = low if torch.is_tensor(low) else torch.full_like(x, float(low))
        high_t = high if torch.is_tensor(high) else torch.full_like(x, float(high))
        return torch.minimum(torch.maximum(x, low_t), high_t)

    def stop(self, x: Any) -> Any:
        return x.detach()

    def row_mean(self, x: Any, mask: Any) -> Any:
        weights = mask.to(x.dtype)
        count = torch.clamp(weights.sum(dim=-1, keepdim=True), min=1.0)
        return ((x * weights).sum(dim=-1, keepdim=True) / count).expand_as(x)


#: The torch implementation of :class:`ArrayOps`.
TORCH_OPS: ArrayOps = _TorchOps()


def elementwise_loss(
    spec: LossSpec, lp: Any, inputs: Mapping[str, Any], config: Mapping[str, float], mask: Any
) -> Any:
    """Per-token loss of ``spec`` (same shape as ``lp``), differentiable through ``lp``."""
    return spec.elementwise(TORCH_OPS, lp, inputs, config, mask)
