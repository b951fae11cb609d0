"""RestClient against the embedded null server: every method, typed answers, paging, tenancy."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from _servers import ServerHandle

from tinkex_actors import Config
from tinkex_actors.errors import (
    ClientClosedError,
    ConflictError,
    InvalidTinkerPathError,
    NotFoundError,
    ValidationError,
)
from tinkex_actors.futures import ActorFuture
from tinkex_actors.rest import RestClient
from tinkex_actors.testing import FakeBackend
from tinkex_actors.transport import HTTPTransport, acquire_transport, release_transport
from tinkex_actors.types import (
    Checkpoint,
    CheckpointArchiveUrlResponse,
    CheckpointsListResponse,
    Cursor,
    GetSamplerResponse,
    GetSessionResponse,
    ListSessionsResponse,
    TrainingRun,
    TrainingRunsResponse,
    WeightsInfoResponse,
)

from ._helpers import MODEL, Seeder


def test_sessions(rest: RestClient, seeder: Seeder, trained: dict[str, str]) -> None:
    page = rest.list_sessions(limit=1000)
    assert isinstance(page, ListSessionsResponse)
    assert trained["session"] in page.sessions
    session = rest.get_session(trained["session"])
    assert isinstance(session, GetSessionResponse)
    assert session.training_run_ids == [trained["model"]]
    sampler = seeder.sampler(trained["session"])
    assert rest.get_session(trained["session"]).sampler_ids == [sampler]
    walked = list(rest.iter_sessions(page_size=2))
    assert walked == rest.list_sessions(limit=1000).sessions
    assert len(walked) == len(set(walked))


def test_checkpoint_listings_and_pagination(rest: RestClient, seeder: Seeder) -> None:
    model = seeder.model(seeder.session())
    paths = [seeder.save(model, f"c{i}", sampler=True) for i in range(5)]
    full = rest.list_checkpoints(model)
    assert isinstance(full, CheckpointsListResponse)
    assert all(isinstance(c, Checkpoint) for c in full.checkpoints)
    assert [c.tinker_path for c in full.checkpoints] == paths[::-1]  # newest first
    assert {c.checkpoint_type for c in full.checkpoints} == {"sampler"}
    assert all(c.time.tzinfo is not None for c in full.checkpoints)

    page = rest.list_checkpoints(model, limit=2, offset=1)
    assert page.cursor == Cursor(offset=1, limit=2, total_count=5)
    assert [c.tinker_path for c in page.checkpoints] == paths[::-1][1:3]
    assert [c.tinker_path for c in rest.iter_checkpoints(model, page_size=2)] == paths[::-1]

    mine = rest.list_user_checkpoints(limit=3)
    assert mine.cursor is not None
    assert mine.cursor.limit == 3
    assert [c.tinker_path for c in mine.checkpoints] == paths[::-1][:3]
    walked = [c.tinker_path for c in rest.iter_user_checkpoints(page_size=3)]
    assert walked[:5] == paths[::-1]
    assert len(walked) == len(set(walked)) == mine.cursor.total_count


def test_training_runs(rest: RestClient, trained: dict[str, str]) -> None:
    run = rest.get_training_run(trained["model"])
    assert isinstance(run, TrainingRun)
    assert run.training_run_id == trained["model"]
    assert run.base_model == MODEL
    assert run.is_lora
    assert run.lora_rank == 4
    assert run.last_checkpoint is not None
    assert run.last_checkpoint.tinker_path == trained["weights"]
    assert run.last_sampler_checkpoint is not None
    assert run.last_sampler_checkpoint.tinker_path == trained["sampler"]
    assert rest.get_training_run_by_tinker_path(trained["sampler"]) == run

    page = rest.list_training_runs(limit=1)
    assert isinstance(page, TrainingRunsResponse)
    assert page.cursor.limit == 1
    assert len(page.training_runs) == 1
    ids = [r.training_run_id for r in rest.iter_training_runs(page_size=2)]
    assert trained["model"] in ids
    assert len(ids) == len(set(ids)) == page.cursor.total_count


def test_weights_info_and_sampler(
    rest: RestClient, seeder: Seeder, trained: dict[str, str]
) -> None:
    info = rest.get_weights_info_by_tinker_path(trained["weights"])
    assert isinstance(info, WeightsInfoResponse)
    assert (info.base_model, info.is_lora, info.lora_rank) == (MODEL, True, 4)
    sampler_id = seeder.sampler(trained["session"], trained["sampler"])
    sampler = rest.get_sampler(sampler_id)
    assert isinstance(sampler, GetSamplerResponse)
    assert sampler == GetSamplerResponse(
        sampler_id=sampler_id, base_model=MODEL, model_path=trained["sampler"]
    )


def test_archive_url_by_path_and_by_ids(rest: RestClient, trained: dict[str, str]) -> None:
    before = dt.datetime.now(dt.UTC)
    by_path = rest.get_checkpoint_archive_url(trained["weights"])
    assert isinstance(by_path, CheckpointArchiveUrlResponse)
    assert by_path.url.startswith(rest.config.base_url)
    assert before + dt.timedelta(minutes=14) < by_path.expires < before + dt.timedelta(minutes=16)
    by_ids = rest.get_checkpoint_archive_url(trained["model"], "weights/w1")
    alias = rest.get_checkpoint_archive_url_by_tinker_path(trained["weights"])
    official = rest.get_checkpoint_archive_url_from_tinker_path(trained["weights"])
    paths = {u.url.split("?")[0] for u in (by_path, by_ids, alias, official)}
    assert len(paths) == 1


def test_publish_unpublish_and_visibility(
    rest: RestClient, other_rest: RestClient, trained: dict[str, str]
) -> None:
    run, path = trained["model"], trained["weights"]
    rest.publish_checkpoint(path)
    assert _find(rest, run, path).public
    with pytest.raises(ConflictError):
        rest.publish_checkpoint_from_tinker_path(path)
    # Another tenant now sees the run as accessible, and the published checkpoint only.
    visible = other_rest.get_training_run(run, access_scope="accessible")
    assert visible.last_checkpoint is not None
    assert visible.last_checkpoint.tinker_path == path
    assert [c.tinker_path for c in other_rest.list_checkpoints(run).checkpoints] == [path]
    rest.unpublish_checkpoint(run, "weights/w1")
    assert not _find(rest, run, path).public
    with pytest.raises(ConflictError):
        rest.unpublish_checkpoint_from_tinker_path(path)
    with pytest.raises(NotFoundError):
        other_rest.get_training_run(run, access_scope="accessible")


def _find(rest: RestClient, run: str, path: str) -> Checkpoint:
    return next(c for c in rest.iter_checkpoints(run) if c.tinker_path == path)


def test_set_checkpoint_ttl(rest: RestClient, trained: dict[str, str]) -> None:
    run, path = trained["model"], trained["sampler"]
    before = dt.datetime.now(dt.UTC)
    rest.set_checkpoint_ttl_from_tinker_path(path, 7200)
    expires = _find(rest, run, path).expires_at
    assert expires is not None
    assert before + dt.timedelta(seconds=7190) < expires < before + dt.timedelta(seconds=7300)
    rest.set_checkpoint_ttl(run, "sampler_weights/s1", None)
    assert _find(rest, run, path).expires_at is None


def test_delete_by_path_and_by_ids(rest: RestClient, trained: dict[str, str]) -> None:
    run = trained["model"]
    rest.delete_checkpoint(trained["weights"])
    rest.delete_checkpoint(run, "sampler_weights/s1")
    assert rest.list_checkpoints(run).checkpoints == []
    with pytest.raises(NotFoundError):
        rest.delete_checkpoint_by_tinker_path(trained["weights"])
    with pytest.raises(NotFoundError):
        rest.delete_checkpoint_from_tinker_path(trained["sampler"])
    with pytest.raises(NotFoundError):
        rest.get_checkpoint_archive_url(trained["weights"])


def test_not_found(rest: RestClient) -> None:
    for call in (
        lambda: rest.get_training_run("no-such-run"),
        lambda: rest.get_session("no-such-session"),
        lambda: rest.get_sampler("no-such-sampler"),
        lambda: rest.list_checkpoints("no-such-run"),
        lambda: rest.get_weights_info_by_tinker_path("tinker://no-such-run/weights/x"),
    ):
        with pytest.raises(NotFoundError) as info:
            call()
        assert info.value.status_code == 404


def test_tenancy(rest: RestClient, other_rest: RestClient, trained: dict[str, str]) -> None:
    run, path = trained["model"], trained["weights"]
    with pytest.raises(NotFoundError):
        other_rest.get_training_run(run)
    with pytest.raises(NotFoundError):
        other_rest.get_session(trained["session"])
    with pytest.raises(NotFoundError):
        other_rest.delete_checkpoint(path)
    with pytest.raises(NotFoundError):
        other_rest.publish_checkpoint(path)
    with pytest.raises(NotFoundError):
        other_rest.get_checkpoint_archive_url(path)
    theirs = {c.tinker_path for c in other_rest.iter_user_checkpoints()}
    assert path not in theirs
    assert trained["session"] not in other_rest.list_sessions(limit=1000).sessions
    assert rest.get_training_run(run).training_run_id == run  # still there for its owner


def test_async_twins(rest: RestClient, seeder: Seeder, trained: dict[str, str]) -> None:
    run, weights, sampler = trained["model"], trained["weights"], trained["sampler"]
    sampler_id = seeder.sampler(trained["session"])
    pairs: list[tuple[ActorFuture[Any], Callable[[], Any]]] = [
        (rest.list_sessions_async(limit=1000), lambda: rest.list_sessions(limit=1000)),
        (rest.get_session_async(trained["session"]), lambda: rest.get_session(trained["session"])),
        (rest.list_user_checkpoints_async(5), lambda: rest.list_user_checkpoints(5)),
        (rest.list_checkpoints_async(run), lambda: rest.list_checkpoints(run)),
        (rest.get_training_run_async(run), lambda: rest.get_training_run(run)),
        (
            rest.get_training_run_by_tinker_path_async(weights),
            lambda: rest.get_training_run(run),
        ),
        (rest.list_training_runs_async(3), lambda: rest.list_training_runs(3)),
        (
            rest.get_weights_info_by_tinker_path_async(weights),
            lambda: rest.get_weights_info_by_tinker_path(weights),
        ),
        (rest.get_sampler_async(sampler_id), lambda: rest.get_sampler(sampler_id)),
    ]
    for future, sync in pairs:
        assert isinstance(future, ActorFuture)
        assert future.result(30) == sync()
    urls = [
        rest.get_checkpoint_archive_url_async(weights).result(30),
        rest.get_checkpoint_archive_url_by_tinker_path_async(weights).result(30),
        rest.get_checkpoint_archive_url_from_tinker_path_async(weights).result(30),
    ]
    assert all(isinstance(u, CheckpointArchiveUrlResponse) for u in urls)
    assert rest.publish_checkpoint_async(weights).result(30) is None
    assert _find(rest, run, weights).public
    rest.unpublish_checkpoint_from_tinker_path_async(weights).result(30)
    rest.publish_checkpoint_from_tinker_path_async(weights).result(30)
    rest.unpublish_checkpoint_async(run, "weights/w1").result(30)
    assert not _find(rest, run, weights).public
    rest.set_checkpoint_ttl_from_tinker_path_async(weights, 7200).result(30)
    rest.set_checkpoint_ttl_async(run, "weights/w1", None).result(30)
    assert _find(rest, run, weights).expires_at is None
    rest.delete_checkpoint_async(weights).result(30)
    rest.delete_checkpoint_by_tinker_path_async(sampler).result(30)
    assert rest.list_checkpoints(run).checkpoints == []
    with pytest.raises(NotFoundError):
        rest.delete_checkpoint_from_tinker_path_async(sampler).result(30)


# ---------------------------------------------------------------------------- bad input
MALFORMED = [
    "tinker:/run/weights/a",  # wrong scheme
    "http://run/weights/a",  # wrong scheme
    "tinker://run/weights",  # too few parts
    "tinker://run/weights/a/b",  # too many parts
    "tinker://run/checkpoints/a",  # unknown kind
    "tinker:///weights/a",  # empty run id
    "tinker://run/weights/",  # empty name
    42,  # not a str
]


@pytest.fixture
def offline_rest() -> Any:
    """A RestClient whose transport records (and would refuse) anything sent."""
    backend = FakeBackend()
    config = Config(api_key="tml-offline-key-000000", base_url="http://127.0.0.1:9")
    client = RestClient(config, transport=HTTPTransport(config, backend=backend))
    yield client, backend
    client.close()
    client.transport.close()


@pytest.mark.parametrize("path", MALFORMED)
def test_malformed_tinker_paths_raise_before_sending(offline_rest: Any, path: Any) -> None:
    rest, backend = offline_rest
    calls: list[Callable[[], Any]] = [
        lambda: rest.get_checkpoint_archive_url(path),
        lambda: rest.get_checkpoint_archive_url_by_tinker_path(path),
        lambda: rest.get_checkpoint_archive_url_async(path),
        lambda: rest.delete_checkpoint(path),
        lambda: rest.delete_checkpoint_by_tinker_path_async(path),
        lambda: rest.publish_checkpoint(path),
        lambda: rest.publish_checkpoint_from_tinker_path_async(path),
        lambda: rest.unpublish_checkpoint(path),
        lambda: rest.unpublish_checkpoint_from_tinker_path(path),
        lambda: rest.set_checkpoint_ttl_from_tinker_path(path, 3600),
        lambda: rest.get_training_run_by_tinker_path(path),
        lambda: rest.get_training_run_by_tinker_path_async(path),
        lambda: rest.get_weights_info_by_tinker_path(path),
        lambda: rest.get_weights_info_by_tinker_path_async(path),
    ]
    for call in calls:
        with pytest.raises(InvalidTinkerPathError) as info:
            call()
        assert "tinker://<training_run_id>/<weights|sampler_weights" in str(info.value)
        assert info.value.field == "tinker_path"
    assert backend.sent == []


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda r: r.list_sessions(limit=0), "limit"),
        (lambda r: r.list_sessions(offset=-1), "offset"),
        (lambda r: r.list_sessions(limit=True), "limit"),
        (lambda r: r.list_sessions(access_scope="mine"), "access_scope"),
        (lambda r: r.get_session(""), "session_id"),
        (lambda r: r.get_session("a/b"), "session_id"),
        (lambda r: r.list_user_checkpoints(limit="10"), "limit"),
        (lambda r: r.list_checkpoints("run", limit=0), "limit"),
        (lambda r: r.list_checkpoints(None), "training_run_id"),
        (lambda r: r.get_training_run(".."), "training_run_id"),
        (lambda r: r.list_training_runs(project_id=""), "project_id"),
        (lambda r: r.delete_checkpoint("run", "w1"), "checkpoint_id"),
        (lambda r: r.delete_checkpoint("run", "weights/a/b"), "checkpoint_id"),
        (lambda r: r.publish_checkpoint("run", "bogus/a"), "checkpoint_id"),
        (lambda r: r.get_checkpoint_archive_url("run/x", "weights/a"), "training_run_id"),
        (lambda r: r.set_checkpoint_ttl("run", "weights/a", 0), "ttl_seconds"),
        (lambda r: r.set_checkpoint_ttl("run", "weights/a", "1h"), "ttl_seconds"),
        (lambda r: r.get_sampler("bad id"), "sampler_id"),
        (lambda r: r.iter_user_checkpoints(page_size=0), "page_size"),
        (lambda r: r.iter_checkpoints("run", page_size=-1), "page_size"),
        (lambda r: r.iter_training_runs(access_scope="all"), "access_scope"),
        (lambda r: r.iter_sessions(page_size=0), "page_size"),
        (lambda r: r.list_training_runs_async(limit=0), "limit"),
    ],
)
def test_bad_arguments_raise_before_sending(
    offline_rest: Any, call: Callable[[RestClient], Any], field: str
) -> None:
    rest, backend = offline_rest
    with pytest.raises(ValidationError) as info:
        call(rest)
    assert info.value.field == field
    assert backend.sent == []


# ---------------------------------------------------------------------------- lifecycle
def test_close_and_shared_transport(null_server: ServerHandle) -> None:
    config = Config(api_key=null_server.api_key, base_url=null_server.base_url)
    shared = acquire_transport(config)
    try:
        owned = RestClient(config)
        assert owned.transport is shared  # one pool per tenant
        given = RestClient(config, transport=shared)
        owned.close()
        owned.close()  # idempotent
        assert owned.closed
        assert not shared.closed
        with pytest.raises(ClientClosedError):
            owned.list_sessions()
        with pytest.raises(ClientClosedError):
            owned.list_sessions_async()
        assert isinstance(given.list_sessions(), ListSessionsResponse)
        given.close()
        assert not shared.closed  # a given transport is never closed by the client
    finally:
        release_transport(shared)
    assert shared.closed


def test_repr_hides_the_key(rest: RestClient) -> None:
    text = repr(rest)
    assert rest.config.api_key not in text
    assert rest.config.base_url in text
    assert "open" in text
    with pytest.raises(ValidationError):
        RestClient("not a config")  # type: ignore[arg-type]
