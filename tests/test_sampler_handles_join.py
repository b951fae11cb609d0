"""A restored client's clone id: the server's ``join_sampling_session`` counter when announced.

The embedded server does not announce ``sample_join_sampling_session`` (so the end-to-end tests
in ``tests/server/test_sampler_handles.py`` see random clone ids); this checks the request and
the checks on its answer against a scripted server, as protocol §3.6 describes them.
"""

from __future__ import annotations

import orjson
import pytest
from transport._server import Answer, LocalServer, Seen

from tinkex_actors import _constants as c
from tinkex_actors._sampler_handles import _clone_id
from tinkex_actors.config import Config
from tinkex_actors.errors import ResponseDecodeError
from tinkex_actors.testing import SleepRecorder
from tinkex_actors.transport import HTTPTransport
from tinkex_actors.types import ClientConfigResponse

KEY = "tml-join-test-0123456789"
JOIN = ClientConfigResponse(sample_join_sampling_session=True)


def _clone(answer: bytes) -> tuple[int, list[Seen]]:
    server = LocalServer(lambda seen: Answer(200, answer, {"Content-Type": "application/json"}))
    config = Config(api_key=KEY, base_url=server.url, max_retries=0)
    transport = HTTPTransport(config, sleep=SleepRecorder())
    try:
        return _clone_id(transport, JOIN, "session-1:sample:0"), server.requests
    finally:
        transport.close()
        server.stop()


def test_the_server_assigns_the_clone_id_when_it_announces_joining() -> None:
    clone, seen = _clone(b'{"client_counter": 7, "type": "join_sampling_session"}')
    assert clone == 7
    assert [s.target for s in seen] == ["/api/v1/join_sampling_session"]
    assert orjson.loads(seen[0].body) == {
        "sampling_session_id": "session-1:sample:0",
        "type": "join_sampling_session",
    }


@pytest.mark.parametrize(
    "answer", [b"{}", b'{"client_counter": -1}', b'{"client_counter": true}', b"[3]"]
)
def test_an_unusable_counter_is_a_decode_error(answer: bytes) -> None:
    with pytest.raises(ResponseDecodeError) as info:
        _clone(answer)
    assert "client_counter" in str(info.value)


def test_without_the_flag_the_id_is_random_and_never_the_originals() -> None:
    drawn = {_clone_id(None, ClientConfigResponse(), "s") for _ in range(200)}  # type: ignore[arg-type]
    assert len(drawn) > 190
    assert all(1 <= clone <= c.SAMPLE_CLONE_ID_MAX for clone in drawn)
