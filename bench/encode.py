"""Big-batch encode: tinkex_actors vs the official ``tinker`` SDK, in one process.

The batch is 128 datums x 2,048 tokens with ``target_tokens`` and ``weights`` (the shape of a
cross_entropy step). For each path the script times building the datums (from Python lists or
from numpy arrays) and serializing the forward_backward request (protobuf, as current SDKs send
it, and JSON, the legacy body), and prints median / min / max over the repetitions and the
ratio official / ours (above 1 means we are faster).

Official paths: datums are ``tinker.types.Datum`` (0.38 public dataclasses), protobuf through
``tinker.proto.request_conv``; JSON through the SDK's pydantic models
(``model_dump(exclude_none=True, mode="json")``) and ``json.dumps`` as httpx sends a JSON body.

Run: ``.venv/bin/python bench/bench_encode.py [--reps N] [--datums N] [--tokens N]``.
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
    fn()  # warm up
    times = []
    for _ in range(reps):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _stats(times: list[float]) -> str:
    med, low, high = statistics.median(times), min(times), max(times)
    return f"{med * 1e3:8.2f} ms (min {low * 1e3:7.2f}, max {high * 1e3:7.2f})"


def report(name: str, ours: list[float], theirs: list[float]) -> float:
    o, t = statistics.median(ours), statistics.median(theirs)
    ratio = t / o
    print(f"{name:<34} ours {_stats(ours)} | official {_stats(theirs)} | x{ratio:5.2f}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--datums", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=2048)
    args = parser.parse_args()
    lists = make_lists(args.datums, args.tokens)
    arrays = make_arrays(lists)
    reps = args.reps

    # Same bytes on the wire: the official parser reads ours identically.
    from tinker.proto import tinker_public_pb2 as official_pb

    mine, theirs = official_pb.ForwardBackwardRequest(), official_pb.ForwardBackwardRequest()
    mine.ParseFromString(ours_proto(ours_build(lists)))
    theirs.ParseFromString(official_proto(official_build(lists)))
    assert mine == theirs, "protobuf bodies differ"
    assert json.loads(ours_json(ours_build(lists))) == json.loads(
        official_json(official_json_build(lists))
    ), "JSON bodies differ"

    print(
        f"batch: {args.datums} datums x {args.tokens} tokens (target_tokens + weights), {reps} reps"
    )
    ours_d, their_d = ours_build(lists), official_build(lists)
    ours_np, their_np = ours_build(arrays), official_build(arrays)
    their_json_d = official_json_build(lists)
    ratios = {
        "build from lists": report(
            "build datums from lists",
            timeit(lambda: ours_build(lists), reps),
            timeit(lambda: official_build(lists), reps),
        ),
        "build from numpy": report(
            "build datums from numpy",
            timeit(lambda: ours_build(arrays), reps),
            timeit(lambda: official_build(arrays), reps),
        ),
        "proto from datums": report(
            "protobuf from built datums",
            timeit(lambda: ours_proto(ours_d), reps),
            timeit(lambda: official_proto(their_d), reps),
        ),
        "proto from numpy datums": report(
            "protobuf from numpy-built datums",
            timeit(lambda: ours_proto(ours_np), reps),
            timeit(lambda: official_proto(their_np), reps),
        ),
        "json from datums": report(
            "JSON from built datums",
            timeit(lambda: ours_json(ours_d), reps),
            timeit(lambda: official_json(their_json_d), reps),
        ),
        "lists -> proto": report(
            "lists -> protobuf (end to end)",
            timeit(lambda: ours_proto(ours_build(lists)), reps),
            timeit(lambda: official_proto(official_build(lists)), reps),
        ),
        "numpy -> proto": report(
            "numpy -> protobuf (end to end)",
            timeit(lambda: ours_proto(ours_build(arrays)), reps),
            timeit(lambda: official_proto(official_build(arrays)), reps),
        ),
        "lists -> json": report(
            "lists -> JSON (end to end)",
            timeit(lambda: ours_json(ours_build(lists)), reps),
            timeit(lambda: official_json(official_json_build(lists)), reps),
        ),
        "numpy -> json": report(
            "numpy -> JSON (end to end)",
            timeit(lambda: ours_json(ours_build(arrays)), reps),
            timeit(lambda: official_json(official_json_build(arrays)), reps),
        ),
    }
    slowest = min(ratios, key=ratios.__getitem__)
    print(f"smallest speed-up: {slowest} x{ratios[slowest]:.2f} (target: x2 or more end to end)")


if __name__ == "__main__":
    main()
