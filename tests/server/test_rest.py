"""REST (protocol §3.8), archives, TTLs and tenancy over plain HTTP against the null server."""

from __future__ import annotations

import io
import tarfile
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests

from ._helpers import MODEL, Api, datum_json

DATA = [datum_json([1, 2, 3], [2, 3, 4])]


def _new_dirs(api: Api, before: set[str]) -> set[str]:
    return {p.name for p in (api.server.data_dir / "checkpoints").iterdir()} - before


def _dirs(api: Api) -> set[str]:
    return {p.name for p in (api.server.data_dir / "checkpoints").iterdir()}


@pytest.fixture
def trained(api: Api) -> dict[str, str]:
    """A session, a model with one step, a training and a sampler checkpoint."""
    session = api.session()
    model = api.create_model(session)
    api.fwdbwd(model, 1, DATA)
    api.optim(model, 2)
    return {
        "session": session,
        "model": model,
        "weights": api.save(model, 3, "w"),
        "sampler": api.save(model, 4, "s", sampler=True),
    }


def test_pagination_over_250_checkpoints(api: Api) -> None:
    total_before = api.get("/checkpoints", params={"limit": 1}).json()["cursor"]["total_count"]
    session = api.session()
    model = api.create_model(session)
    futures = [
        api.ok(
            "/save_weights_for_sampler", {"model_id": model, "path": f"c{i:03d}", "seq_id": i + 1}
        )
        for i in range(250)
    ]
    for future in futures:
        api.result(future)
    names: list[str] = []
    for offset in (0, 100, 200):
        page = api.get("/checkpoints", params={"limit": 100, "offset": offset}).json()
        assert page["cursor"] == {"offset": offset, "limit": 100, "total_count": total_before + 250}
        names += [c["checkpoint_id"] for c in page["checkpoints"]]
    # Newest first: the 250 just saved lead, in reverse order of saving.
    assert names[:250] == [f"sampler_weights/c{i:03d}" for i in reversed(range(250))]
    per_run = api.get(
        f"/training_runs/{model}/checkpoints", params={"limit": 40, "offset": 240}
    ).json()
    assert per_run["cursor"]["total_count"] == 250
    assert [c["checkpoint_id"] for c in per_run["checkpoints"]] == [
        f"sampler_weights/c{i:03d}" for i in reversed(range(10))
    ]


def test_training_runs_and_sessions(api: Api, trained: dict[str, str]) -> None:
    run = api.get(f"/training_runs/{trained['model']}").json()
    assert run["training_run_id"] == trained["model"]
    assert run["base_model"] == MODEL
    assert run["is_lora"] is True
    assert run["lora_rank"] == 4
    assert run["last_checkpoint"]["tinker_path"] == trained["weights"]
    assert run["last_checkpoint"]["checkpoint_type"] == "training"
    assert run["last_sampler_checkpoint"]["tinker_path"] == trained["sampler"]
    listed = api.get("/training_runs", params={"limit": 1000}).json()
    assert trained["model"] in {r["training_run_id"] for r in listed["training_runs"]}
    sessions = api.get("/sessions", params={"limit": 1000}).json()["sessions"]
    assert trained["session"] in sessions
    detail = api.get(f"/sessions/{trained['session']}").json()
    assert detail["training_run_ids"] == [trained["model"]]
    info = api.ok("/weights_info", {"tinker_path": trained["weights"]})
    assert info["base_model"] == MODEL
    assert info["lora_rank"] == 4


def test_tenant_isolation(api: Api, other_api: Api, trained: dict[str, str]) -> None:
    model, session = trained["model"], trained["session"]
    assert (
        trained["session"]
        not in other_api.get("/sessions", params={"limit": 1000}).json()["sessions"]
    )
    runs = other_api.get("/training_runs", params={"limit": 1000}).json()["training_runs"]
    assert model not in {r["training_run_id"] for r in runs}
    mine = {
        c["tinker_path"]
        for c in other_api.get("/checkpoints", params={"limit": 1000}).json()["checkpoints"]
    }
    assert trained["weights"] not in mine
    assert other_api.get(f"/sessions/{session}").status_code == 404
    assert other_api.get(f"/training_runs/{model}").status_code == 404
    assert other_api.get(f"/training_runs/{model}/checkpoints").status_code == 404
    assert other_api.post("/weights_info", {"tinker_path": trained["weights"]}).status_code == 404
    assert other_api.post("/session_heartbeat", {"session_id": session}).status_code == 404
    assert other_api.post("/optim_step", {"model_id": model, "seq_id": 9}).status_code == 404
    assert other_api.post("/get_info", {"model_id": model}).status_code == 404
    body = {"model_id": model, "path": "stolen", "seq_id": 9}
    assert other_api.post("/save_weights", body).status_code == 404
    ckpt = f"/training_runs/{model}/checkpoints/weights/w"
    assert other_api.request("DELETE", ckpt).status_code == 404
    other_session = other_api.session()
    load = {
        "session_id": other_session,
        "model_seq_id": 0,
        "path": trained["weights"],
        "optimizer": False,
    }
    assert other_api.post("/load_weights", load).status_code == 404
    sampling = {
        "session_id": other_session,
        "sampling_session_seq_id": 0,
        "model_path": trained["sampler"],
    }
    assert other_api.post("/create_sampling_session", sampling).status_code == 404
    assert other_api.get(f"{ckpt}/archive").status_code == 404
    # ...and the owner still has everything.
    assert api.get(f"/training_runs/{model}/checkpoints").json()["cursor"]["total_count"] == 2


def test_publish_unpublish_visibility(api: Api, other_api: Api, trained: dict[str, str]) -> None:
    model = trained["model"]
    sampler_ckpt = f"/training_runs/{model}/checkpoints/sampler_weights/s"
    assert api.post(f"{sampler_ckpt}/publish").status_code == 204
    assert api.post(f"{sampler_ckpt}/publish").status_code == 409
    # Published: readable, listable (only that one), sampleable, downloadable by the other key.
    assert other_api.post("/weights_info", {"tinker_path": trained["sampler"]}).status_code == 200
    listed = other_api.get(f"/training_runs/{model}/checkpoints").json()["checkpoints"]
    assert [c["tinker_path"] for c in listed] == [trained["sampler"]]
    assert listed[0]["public"] is True
    accessible = other_api.get(
        "/training_runs", params={"access_scope": "accessible", "limit": 1000}
    ).json()
    assert model in {r["training_run_id"] for r in accessible["training_runs"]}
    owned = other_api.get("/training_runs", params={"limit": 1000}).json()
    assert model not in {r["training_run_id"] for r in owned["training_runs"]}
    other_session = other_api.session()
    sampler = other_api.ok(
        "/create_sampling_session",
        {
            "session_id": other_session,
            "sampling_session_seq_id": 0,
            "model_path": trained["sampler"],
        },
    )["sampling_session_id"]
    sample = other_api.result(
        other_api.ok(
            "/asample",
            {
                "sampling_session_id": sampler,
                "prompt": {"chunks": [{"type": "encoded_text", "tokens": [1, 2]}]},
                "sampling_params": {"max_tokens": 2},
            },
        )
    )
    assert len(sample["sequences"][0]["tokens"]) == 2
    assert other_api.get(f"{sampler_ckpt}/archive").status_code == 200
    # ...but never deletable, publishable or TTL-able by the other key.
    assert other_api.request("DELETE", sampler_ckpt).status_code == 403
    assert other_api.request("DELETE", f"{sampler_ckpt}/publish").status_code == 403
    assert (
        other_api.request("PUT", f"{sampler_ckpt}/ttl", json={"ttl_seconds": 5}).status_code == 403
    )
    # Unpublish: invisible again; a second unpublish is 409.
    assert api.request("DELETE", f"{sampler_ckpt}/publish").status_code == 204
    assert api.request("DELETE", f"{sampler_ckpt}/publish").status_code == 409
    assert other_api.post("/weights_info", {"tinker_path": trained["sampler"]}).status_code == 404
    assert other_api.get(f"/training_runs/{model}/checkpoints").status_code == 404


def test_delete_removes_files_and_leaves_samplers_working(
    api: Api, trained: dict[str, str]
) -> None:
    model, session = trained["model"], trained["session"]
    before = _dirs(api)
    path = api.save(model, 5, "doomed", sampler=True)
    (new_dir,) = _new_dirs(api, before)
    sampler = api.ok(
        "/create_sampling_session",
        {"session_id": session, "sampling_session_seq_id": 4, "model_path": path},
    )["sampling_session_id"]
    target = f"/training_runs/{model}/checkpoints/sampler_weights/doomed"
    assert api.request("DELETE", target).status_code == 204
    assert new_dir not in _dirs(api)
    assert api.request("DELETE", target).status_code == 404
    assert api.post("/weights_info", {"tinker_path": path}).status_code == 404
    listed = api.get(f"/training_runs/{model}/checkpoints").json()["checkpoints"]
    assert path not in {c["tinker_path"] for c in listed}
    # The sampler copied the weights when it was created: it keeps working.
    sample = api.result(
        api.ok(
            "/asample",
            {
                "sampling_session_id": sampler,
                "prompt": {"chunks": [{"type": "encoded_text", "tokens": [3]}]},
                "sampling_params": {"max_tokens": 1},
            },
        )
    )
    assert len(sample["sequences"]) == 1


def test_same_name_saves_conflict_unless_overwrite(api: Api, trained: dict[str, str]) -> None:
    model = trained["model"]
    first = api.ok("/save_weights", {"model_id": model, "path": "dup", "seq_id": 5})
    clash = api.post("/save_weights", {"model_id": model, "path": "dup", "seq_id": 6})
    assert clash.status_code == 409
    assert "overwrite" in clash.json()["detail"]
    path = api.result(first)["path"]
    assert (
        api.post("/save_weights", {"model_id": model, "path": "dup", "seq_id": 6}).status_code
        == 409
    )
    old = api.get(f"/training_runs/{model}/checkpoints").json()["checkpoints"]
    old_time = next(c["time"] for c in old if c["tinker_path"] == path)
    before = _dirs(api)
    api.optim(model, 6)
    assert api.save(model, 7, "dup", overwrite=True) == path
    assert len(_new_dirs(api, before)) == 1
    assert len(before - _dirs(api)) == 1  # the replaced files are gone
    new = api.get(f"/training_runs/{model}/checkpoints").json()["checkpoints"]
    assert [c["time"] for c in new if c["tinker_path"] == path] != [old_time]


def _tampered(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    path = changes.pop("path", parts.path)
    query.update(changes)
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(query), ""))


def test_archive_url_signed_streamed_and_expiring(api: Api, trained: dict[str, str]) -> None:
    model = trained["model"]
    target = f"/training_runs/{model}/checkpoints/weights/w/archive"
    reply = api.get(target)
    assert reply.status_code == 200
    assert "Expires" in reply.headers
    url, expires = reply.json()["url"], reply.json()["expires"]
    assert expires.endswith("Z")
    download = requests.get(url, timeout=30)  # no API key: the signature is the permission
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/x-tar"
    assert int(download.headers["content-length"]) == len(download.content)
    with tarfile.open(fileobj=io.BytesIO(download.content)) as tar:
        names = sorted(tar.getnames())
        assert names == [
            "adapter_config.json",
            "adapter_model.safetensors",
            "optimizer.safetensors",
        ]
        member = tar.extractfile("adapter_model.safetensors")
        assert member is not None
        payload = member.read()
    on_disk = list((api.server.data_dir / "checkpoints").rglob("adapter_model.safetensors"))
    assert payload in {p.read_bytes() for p in on_disk}
    signature = parse_qs(urlsplit(url).query)["signature"][0]
    forged = "0" * len(signature)
    for bad in (
        _tampered(url, signature=forged),
        _tampered(url, expires=str(int(parse_qs(urlsplit(url).query)["expires"][0]) + 60)),
        _tampered(url, path=urlsplit(url).path.replace("/weights/w", "/sampler_weights/s")),
        _tampered(url, signature=""),
    ):
        denied = requests.get(bad, timeout=30)
        assert denied.status_code == 403, bad
        assert "invalid or expired" in denied.json()["detail"]
    short = api.get(target, params={"expires_in": 1}).json()["url"]
    time.sleep(2.1)
    assert requests.get(short, timeout=30).status_code == 403


def test_ttl_expiry_removes_checkpoints(api: Api, trained: dict[str, str]) -> None:
    model = trained["model"]
    before = _dirs(api)
    short = api.save(model, 5, "short", ttl_seconds=1)
    (short_dir,) = _new_dirs(api, before)
    listed = api.get(f"/training_runs/{model}/checkpoints").json()["checkpoints"]
    entry: dict[str, Any] = next(c for c in listed if c["tinker_path"] == short)
    assert entry["expires_at"] is not None
    kept = f"/training_runs/{model}/checkpoints/weights/w/ttl"
    assert api.request("PUT", kept, json={"ttl_seconds": 1}).status_code == 204
    assert api.request("PUT", kept, json={"ttl_seconds": None}).status_code == 204
    deadline = time.monotonic() + 10
    while short_dir in _dirs(api):
        assert time.monotonic() < deadline, "expired checkpoint files were not swept"
        time.sleep(0.1)
    assert api.post("/weights_info", {"tinker_path": short}).status_code == 404
    listed = api.get(f"/training_runs/{model}/checkpoints").json()["checkpoints"]
    assert trained["weights"] in {c["tinker_path"] for c in listed}
    assert short not in {c["tinker_path"] for c in listed}
