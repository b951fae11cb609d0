"""Workload 3: big-batch encode, tinkex_actors vs the official ``tinker`` SDK (client side).

The batch is 128 datums x 2,048 tokens with ``target_tokens`` and ``weights`` (the shape of a
cross_entropy step). Each path times building the datums (from Python lists or from numpy
arrays) and serializing the forward_backward request (protobuf, as current SDKs send it, and
JSON, the legacy body): end to end for the harness's table, and split into build / serialize
when run alone. No server is involved; both SDKs run in this process, one after the other,
with a ``gc.collect()`` before each timed run. Before timing, the bodies are checked to be the
same (the official protobuf parser reads ours identically; the JSON parses to the same value).

Official paths: datums are ``tinker.types.Datum`` (0.38 public dataclasses), protobuf through
``tinker.proto.request_conv``; JSON through the SDK's pydantic models
(``model_dump(exclude_none=True, mode="json")``) and ``json.dumps`` as httpx sends a JSON body.

Run alone: ``.venv/bin/python -m bench.encode [--reps N] [--datums N] [--tokens N]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tinker.types as official
from tinker.proto import request_conv
from tinker.types._pydantic_types.datum import Datum as OfficialJsonDatum
from tinker.types._pydantic_types.forward_backward_input import (
    ForwardBackwardInput as OfficialJsonInput,
)
from tinker.types._pydantic_types.model_input import ModelInput as OfficialJsonModelInput

from tinkex_actors import wire
from tinkex_actors.types import (
    Datum,
    ForwardBackwardInput,
    ForwardBackwardRequest,
    ModelInput,
)

VOCAB = 151_000


def make_lists(
    datums: int, tokens: int, seed: int = 0
) -> list[tuple[list[int], list[int], list[float]]]:
    rng = random.Random(seed)
    batch = []
    for _ in range(datums):
        ids = [rng.randrange(VOCAB) for _ in range(tokens + 1)]
        weights = [0.0] * (tokens // 4) + [1.0] * (tokens - tokens // 4)
        batch.append((ids[:-1], ids[1:], weights))
    return batch


def make_arrays(
    lists: list[tuple[list[int], list[int], list[float]]],
) -> list[tuple[Any, Any, Any]]:
    return [
        (
            np.asarray(a, dtype=np.int64),
            np.asarray(b, dtype=np.int64),
            np.asarray(c, dtype=np.float32),
        )
        for a, b, c in lists
    ]


# ---------------------------------------------------------------------------- ours


def ours_build(batch: list[tuple[Any, Any, Any]]) -> list[Datum]:
    return [
        Datum(ModelInput.from_ints(tokens), {"target_tokens": targets, "weights": weights})
        for tokens, targets, weights in batch
    ]


def ours_request(datums: list[Datum]) -> ForwardBackwardRequest:
    return ForwardBackwardRequest(
        forward_backward_input=ForwardBackwardInput(data=datums, loss_fn="cross_entropy"),
        model_id="bench-model",
        seq_id=1,
    )


def ours_proto(datums: list[Datum]) -> bytes:
    return wire.encode_forward_backward_request(ours_request(datums))


def ours_json(datums: list[Datum]) -> bytes:
    return wire.encode_json(ours_request(datums))


# ---------------------------------------------------------------------------- official


def official_build(batch: list[tuple[Any, Any, Any]]) -> list[Any]:
    return [
        official.Datum(
            model_input=official.ModelInput.from_ints(
                tokens.tolist() if isinstance(tokens, np.ndarray) else tokens
            ),
            loss_fn_inputs={"target_tokens": targets, "weights": weights},
        )
        for tokens, targets, weights in batch
    ]


def official_proto(datums: list[Any]) -> bytes:
    request = official.ForwardBackwardRequest(
        forward_backward_input=official.ForwardBackwardInput(data=datums, loss_fn="cross_entropy"),
        model_id="bench-model",
        seq_id=1,
    )
    return request_conv.forward_backward_request_to_proto(request).SerializeToString()


def official_json_build(batch: list[tuple[Any, Any, Any]]) -> list[Any]:
    return [
        OfficialJsonDatum(
            model_input=OfficialJsonModelInput.from_ints(
                tokens.tolist() if isinstance(tokens, np.ndarray) else tokens
            ),
            loss_fn_inputs={"target_tokens": targets, "weights": weights},
        )
        for tokens, targets, weights in batch
    ]


def official_json(datums: list[Any]) -> bytes:
    fbi = OfficialJsonInput(data=datums, loss_fn="cross_entropy")
    body = {
        "forward_backward_input": fbi.model_dump(exclude_none=True, mode="json"),
        "model_id": "bench-model",
        "seq_id": 1,
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


# ---------------------------------------------------------------------------- timing


def timeit(fn: Callable[[], object], reps: int) -> list[float]:
    """Seconds per run of ``fn`` (after one warm-up run)."""
    fn()
    times = []
    for _ in range(reps):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def check_same_bodies(lists: list[tuple[list[int], list[int], list[float]]]) -> None:
    """Both SDKs put the same request on the wire (else the comparison means nothing)."""
    from tinker.proto import tinker_public_pb2 as official_pb

    mine, theirs = official_pb.ForwardBackwardRequest(), official_pb.ForwardBackwardRequest()
    mine.ParseFromString(ours_proto(ours_build(lists)))
    theirs.ParseFromString(official_proto(official_build(lists)))
    if mine != theirs:
        raise RuntimeError("protobuf bodies differ")
    if json.loads(ours_json(ours_build(lists))) != json.loads(
        official_json(official_json_build(lists))
    ):
        raise RuntimeError("JSON bodies differ")


def paths(
    lists: list[tuple[list[int], list[int], list[float]]],
    arrays: list[tuple[Any, Any, Any]],
    *,
    detail: bool,
) -> dict[str, tuple[Callable[[], object], Callable[[], object]]]:
    """``name -> (ours, official)`` for each timed path (end to end; with ``detail`` also the
    build and serialize steps apart)."""
    out: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "lists -> protobuf": (
            lambda: ours_proto(ours_build(lists)),
            lambda: official_proto(official_build(lists)),
        ),
        "numpy -> protobuf": (
            lambda: ours_proto(ours_build(arrays)),
            lambda: official_proto(official_build(arrays)),
        ),
        "lists -> JSON": (
            lambda: ours_json(ours_build(lists)),
            lambda: official_json(official_json_build(lists)),
        ),
        "numpy -> JSON": (
            lambda: ours_json(ours_build(arrays)),
            lambda: official_json(official_json_build(arrays)),
        ),
    }
    if detail:
        ours_d, their_d = ours_build(lists), official_build(lists)
        ours_np, their_np = ours_build(arrays), official_build(arrays)
        their_json_d = official_json_build(lists)
        out.update(
            {
                "build datums from lists": (
                    lambda: ours_build(lists),
                    lambda: official_build(lists),
                ),
                "build datums from numpy": (
                    lambda: ours_build(arrays),
                    lambda: official_build(arrays),
                ),
                "protobuf from built datums": (
                    lambda: ours_proto(ours_d),
                    lambda: official_proto(their_d),
                ),
                "protobuf from numpy-built datums": (
                    lambda: ours_proto(ours_np),
                    lambda: official_proto(their_np),
                ),
                "JSON from built datums": (
                    lambda: ours_json(ours_d),
                    lambda: official_json(their_json_d),
                ),
            }
        )
    return out


def measure(
    datums: int, tokens: int, reps: int, *, detail: bool = False
) -> dict[str, tuple[list[float], list[float]]]:
    """``name -> (our seconds, official seconds)`` per run, for each path."""
    lists = make_lists(datums, tokens)
    arrays = make_arrays(lists)
    check_same_bodies(lists)
    results = {}
    for name, (ours, theirs) in paths(lists, arrays, detail=detail).items():
        # Alternate the SDKs run by run: drift (other processes) hits both alike.
        ours_t: list[float] = []
        their_t: list[float] = []
        for _ in range(reps):
            ours_t += timeit(ours, 1)
            their_t += timeit(theirs, 1)
        results[name] = (ours_t, their_t)
    return results


def run(settings: Any, progress: Any) -> list[Any]:
    """The harness's rows: end-to-end encode time (target: ours <= 0.5x the official)."""
    from bench._common import Row, Stat, Target

    progress(f"big-batch encode {settings.datums}x{settings.tokens}")
    results = measure(settings.datums, settings.tokens, settings.reps)
    return [
        Row(
            f"3 encode {settings.datums}x{settings.tokens} {name}",
            "ms",
            Stat.of(t * 1000 for t in ours),
            Stat.of(t * 1000 for t in theirs),
            targets=[Target("official", 0.5)],
            digits=1,
        )
        for name, (ours, theirs) in results.items()
    ]


def _stats(times: list[float]) -> str:
    med, low, high = statistics.median(times), min(times), max(times)
    return f"{med * 1e3:8.2f} ms (min {low * 1e3:7.2f}, max {high * 1e3:7.2f})"


def main() -> None:
    """Print every path, build and serialize apart, with official / ours ratios."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--datums", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=2048)
    args = parser.parse_args()
    print(
        f"batch: {args.datums} datums x {args.tokens} tokens (target_tokens + weights), "
        f"{args.reps} reps"
    )
    results = measure(args.datums, args.tokens, args.reps, detail=True)
    for name, (ours, theirs) in results.items():
        ratio = statistics.median(theirs) / statistics.median(ours)
        print(f"{name:<34} ours {_stats(ours)} | official {_stats(theirs)} | x{ratio:5.2f}")


if __name__ == "__main__":
    main()
