"""Idempotency keys: one per call, unique, and not repeated by a forked child."""

from __future__ import annotations

import multiprocessing
import re

from tinkex_actors import _constants as c
from tinkex_actors.transport._headers import new_idempotency_key

KEY = re.compile(rf"^{re.escape(c.IDEMPOTENCY_KEY_PREFIX)}[0-9a-f]{{32}}$")


def test_keys_are_prefixed_128_bit_hex_and_unique() -> None:
    keys = [new_idempotency_key() for _ in range(20_000)]
    assert all(KEY.match(key) for key in keys)
    assert len(set(keys)) == len(keys)


def _child_key(queue: multiprocessing.Queue[str]) -> None:
    queue.put(new_idempotency_key())


def test_a_forked_child_draws_other_keys_than_its_parent() -> None:
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[str] = context.Queue()
    child = context.Process(target=_child_key, args=(queue,))
    child.start()
    theirs = queue.get(timeout=30)
    child.join(30)
    assert child.exitcode == 0
    ours = new_idempotency_key()  # the parent's next key, from the same pre-fork state
    assert KEY.match(theirs)
    assert theirs != ours
    queue.close()
    queue.join_thread()
