"""Combining the results of a chunked forward_backward (protocol §4.5, §5.4).

Each metric key is ``name:reduction``; the reduction says how chunk values combine:

========================  ==========================================================
``sum``                   sum
``mean``                  mean weighted by each chunk's datum count
``min`` / ``max``         minimum / maximum
``slack``                 max minus the weighted mean
``unique``                the first chunk's value under the key, the others as
                          ``key_1``, ``key_2``, ... (values that cannot be folded)
``hash2``, ``hash_unordered``  order-insensitive: the sum of the values as unsigned
                          64-bit integers, modulo 2**64
========================  ==========================================================

The keys come from the first chunk; a key missing from any chunk is dropped, and so is a key
whose reduction is unknown (a newer server may add reductions). A key without exactly one
``:`` breaks the protocol and raises :class:`~tinkex_actors.errors.ResponseDecodeError`
(the official SDK crashes on it as well). Pure functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from tinkex_actors._logging import get_logger
from tinkex_actors.errors import ResponseDecodeError
from tinkex_actors.types._training import ForwardBackwardOutput

__all__ = ["REDUCTIONS", "combine_forward_backward_outputs", "reduce_metrics"]

_UINT64 = (1 << 64) - 1


def _sum(values: Sequence[float], _: Sequence[float]) -> float:
    return math.fsum(values)


def _mean(values: Sequence[float], weights: Sequence[float]) -> float:
    total = math.fsum(weights)
    if total <= 0:
        return math.fsum(values) / len(values)
    return math.fsum(v * w for v, w in zip(values, weights, strict=True)) / total


def _min(values: Sequence[float], _: Sequence[float]) -> float:
    return min(values)


def _max(values: Sequence[float], _: Sequence[float]) -> float:
    return max(values)


def _slack(values: Sequence[float], weights: Sequence[float]) -> float:
    return max(values) - _mean(values, weights)


def _hash(values: Sequence[float], _: Sequence[float]) -> float:
    # An int, like the official SDK's: the combined hash must not lose bits to a float.
    return sum(int(v) & _UINT64 for v in values) & _UINT64


#: Reduction name -> fold of the chunk values (given the chunk weights).
REDUCTIONS: Mapping[str, Callable[[Sequence[float], Sequence[float]], float]] = {
    "sum": _sum,
    "mean": _mean,
    "min": _min,
    "max": _max,
    "slack": _slack,
    "hash2": _hash,
    "hash_unordered": _hash,
}
_UNIQUE = "unique"
_EXPECTED = "metric keys of the form 'name:reduction'"


def reduce_metrics(
    chunk_metrics: Sequence[Mapping[str, float]], weights: Sequence[float] | None = None
) -> dict[str, float]:
    """Combine per-chunk metrics into one dict (see the module docstring for the rules).

    Args:
        chunk_metrics: each chunk's metrics, in chunk order.
        weights: each chunk's weight for ``mean``/``slack`` (its datum count); equal weights
            when omitted.

    Raises:
        ResponseDecodeError: a first-chunk key without exactly one ``:``, or a hash metric
            that is not a finite number.
    """
    if not chunk_metrics:
        return {}
    if weights is None:
        weights = [1.0] * len(chunk_metrics)
    result: dict[str, float] = {}
    for key in chunk_metrics[0]:
        parts = key.split(":")
        if len(parts) != 2:
            raise ResponseDecodeError(
                f"metric key {key!r} does not have exactly one ':'", expected=_EXPECTED
            )
        reduction = parts[1]
        if reduction != _UNIQUE and reduction not in REDUCTIONS:
            get_logger("metrics").debug("tinkex.metrics.unknown_reduction", key=key)
            continue
        if not all(key in m for m in chunk_metrics):
            continue
        values = [m[key] for m in chunk_metrics]
        if reduction == _UNIQUE:
            result[key] = values[0]
            result.update({f"{key}_{i}": value for i, value in enumerate(values[1:], start=1)})
            continue
        if REDUCTIONS[reduction] is _hash and not all(math.isfinite(x) for x in values):
            raise ResponseDecodeError(
                f"metric {key!r} holds a non-finite value", expected="finite hash values"
            )
        result[key] = REDUCTIONS[reduction](values, weights)
    return result


def combine_forward_backward_outputs(
    outputs: Sequence[ForwardBackwardOutput],
) -> ForwardBackwardOutput:
    """One ForwardBackwardOutput from the chunks' results, in chunk order.

    ``loss_fn_outputs`` are concatenated, ``loss_fn_output_type`` is the first chunk's, and
    metrics are reduced with each chunk weighted by its number of ``loss_fn_outputs``.
    """
    if not outputs:
        return ForwardBackwardOutput(loss_fn_output_type="", loss_fn_outputs=[], metrics={})
    return ForwardBackwardOutput(
        loss_fn_output_type=outputs[0].loss_fn_output_type,
        loss_fn_outputs=[item for output in outputs for item in output.loss_fn_outputs],
        metrics=reduce_metrics(
            [output.metrics for output in outputs],
            [float(len(output.loss_fn_outputs)) for output in outputs],
        ),
    )
