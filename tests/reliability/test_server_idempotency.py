"""The server honours ``X-Idempotency-Key`` on every change, not only on queued work.

A client whose answer was lost sends the same request again with the same key; it must get
the first answer, not an error caused by the state the first run left behind (the model it
unloaded, the checkpoint it deleted or published). A new key is a new request as before.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _servers import ServerHandle
from server._helpers import Api, datum_json

KEY = "X-Idempotency-Key"


@pytest.fixture
def api(null_server: ServerHandle) -> Iterator[Api]:
    client = Api(null_server)
    yield client
    client.close()


def test_a_repeated_unload_gets_the_first_answer(api: Api) -> None:
    model = api.create_model(api.session())
    body = {"model_id": model}
    first = api.post("/unload_model", body, headers={KEY: "unload-1"})
    assert first.status_code == 200
    api.result(first.json())
    again = api.post("/unload_model", body, headers={KEY: "unload-1"})
    assert again.status_code == 200
    assert again.json() == first.json()
    assert api.post("/unload_model", body, headers={KEY: "unload-2"}).status_code == 404


def test_repeated_rest_changes_get_the_first_answer(api: Api) -> None:
    model = api.create_model(api.session())
    api.fwdbwd(model, 1, [datum_json([1, 2, 3], [2, 3, 4])])
    api.save(model, 2, "w", sampler=True)
    checkpoint = f"/training_runs/{model}/checkpoints/sampler_weights/w"
    for method, path, body in (
        ("POST", f"{checkpoint}/publish", None),
        ("DELETE", f"{checkpoint}/publish", None),
        ("PUT", f"{checkpoint}/ttl", {"ttl_seconds": 7200}),
        ("DELETE", checkpoint, None),
    ):
        key = {KEY: f"{method}-{path}"}
        assert api.request(method, path, json=body, headers=key).status_code == 204
        assert api.request(method, path, json=body, headers=key).status_code == 204, path
    # A new key is a new request: the checkpoint is gone.
    assert api.request("DELETE", checkpoint, headers={KEY: "fresh"}).status_code == 404
    assert api.request("POST", f"{checkpoint}/publish").status_code == 404


def test_a_key_reused_for_another_change_is_409(api: Api) -> None:
    model = api.create_model(api.session())
    api.save(model, 1, "a", sampler=True)
    api.save(model, 2, "b", sampler=True)
    base = f"/training_runs/{model}/checkpoints/sampler_weights"
    assert api.post(f"{base}/a/publish", headers={KEY: "same"}).status_code == 204
    assert api.post(f"{base}/b/publish", headers={KEY: "same"}).status_code == 409
    # The refused request changed nothing.
    listed = api.get(f"/training_runs/{model}/checkpoints").json()["checkpoints"]
    assert {c["checkpoint_id"]: c["public"] for c in listed} == {
        "sampler_weights/a": True,
        "sampler_weights/b": False,
    }
