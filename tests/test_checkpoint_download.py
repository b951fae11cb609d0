"""CheckpointDownload: real archives from the embedded server, hostile archives, interruptions.

Hostile archives and cut-off bodies come from a scripted local HTTP server (the embedded server
only serves well-formed tars); everything else runs against the embedded servers.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import itertools
import json
import tarfile
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from _servers import ServerHandle
from rest._helpers import ScriptedServer, Seeder, reply, scripted_server
from safetensors.numpy import load_file

from tinkex_actors import Config
from tinkex_actors._constants import DOWNLOAD_TMP_PREFIX
from tinkex_actors.checkpoint_download import CheckpointDownload, download
from tinkex_actors.errors import (
    CheckpointDownloadError,
    CheckpointExistsError,
    InvalidTinkerPathError,
    NotFoundError,
    UnsafeArchiveError,
    ValidationError,
)
from tinkex_actors.rest import RestClient

RUN = "sess:train:0"
PATH = f"tinker://{RUN}/weights/w1"
ARCHIVE_ROUTE = f"/api/v1/training_runs/{RUN}/checkpoints/weights/w1/archive"


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(DOWNLOAD_TMP_PREFIX)]


# ---------------------------------------------------------------------------- real archives
@pytest.fixture
def rest(null_server: ServerHandle) -> Iterator[RestClient]:
    with RestClient(Config(api_key=null_server.api_key, base_url=null_server.base_url)) as client:
        yield client


@pytest.fixture
def saved(null_server: ServerHandle) -> Iterator[str]:
    seeder = Seeder(null_server)
    try:
        yield seeder.save(seeder.model(seeder.session()), "w1")
    finally:
        seeder.close()


def _server_copy(server: ServerHandle, name: str, content: bytes) -> bool:
    digest = hashlib.sha256(content).digest()
    return any(
        hashlib.sha256(p.read_bytes()).digest() == digest
        for p in (server.data_dir / "checkpoints").glob(f"*/{name}")
    )


def test_download_real_checkpoint_and_load_it(
    rest: RestClient, saved: str, null_server: ServerHandle, tmp_path: Path
) -> None:
    out = tmp_path / "new" / "nested"  # created on demand
    calls: list[tuple[int, int | None]] = []
    target = CheckpointDownload.download(
        rest, saved, output_dir=out, progress=lambda done, total: calls.append((done, total))
    )
    assert target == out / saved.removeprefix("tinker://").replace("/", "_")
    assert target == CheckpointDownload.target_dir(saved, out)
    names = sorted(p.name for p in target.iterdir())
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(names)
    weights = load_file(str(target / "adapter_model.safetensors"))
    assert weights["progress"].shape == (1,)
    config = json.loads((target / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tinkex/tiny-llama"
    assert config["r"] == 4
    for name in names:  # byte-identical to the server's own files
        assert _server_copy(null_server, name, (target / name).read_bytes())
    # Progress: starts at 0, never goes back, ends at the announced total.
    total = calls[0][1]
    assert total is not None
    assert calls[0] == (0, total)
    assert calls[-1] == (total, total)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(calls))
    assert _leftovers(tmp_path) == []
    assert sorted(p.name for p in out.iterdir()) == [target.name]


def test_existing_directory_needs_force(rest: RestClient, saved: str, tmp_path: Path) -> None:
    target = CheckpointDownload.target_dir(saved, tmp_path)
    target.mkdir()
    (target / "marker").write_text("old")
    with pytest.raises(CheckpointExistsError, match="force=True") as info:
        download(rest, saved, output_dir=tmp_path)
    assert isinstance(info.value, FileExistsError)
    assert (target / "marker").read_text() == "old"
    again = download(rest, saved, output_dir=tmp_path, force=True)
    assert again == target
    assert not (target / "marker").exists()
    assert (target / "adapter_model.safetensors").is_file()
    assert _leftovers(tmp_path) == []


def test_download_async_and_default_output_dir(
    rest: RestClient, saved: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    target = CheckpointDownload.download_async(rest, saved).result(60)
    assert target == Path.cwd() / CheckpointDownload.target_dir(saved).name
    assert (target / "adapter_config.json").is_file()


def test_missing_checkpoint_leaves_nothing(rest: RestClient, saved: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    missing = saved.rsplit("/", 1)[0] + "/nope"
    with pytest.raises(NotFoundError):
        download(rest, missing, output_dir=out)
    assert not out.exists()


def test_bad_arguments(rest: RestClient, tmp_path: Path) -> None:
    with pytest.raises(InvalidTinkerPathError, match="tinker://<training_run_id>"):
        download(rest, "tinker://run/weights", output_dir=tmp_path)
    with pytest.raises(ValidationError) as info:
        download(rest, PATH, output_dir=tmp_path, force="yes")  # type: ignore[arg-type]
    assert info.value.field == "force"
    with pytest.raises(ValidationError) as info:
        download(rest, PATH, output_dir=tmp_path, progress=5)  # type: ignore[arg-type]
    assert info.value.field == "progress"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValidationError) as info:
        download(rest, PATH, output_dir=tmp_path / "file")
    assert info.value.field == "output_dir"
    with pytest.raises(ValidationError) as info:
        download("rest", PATH, output_dir=tmp_path)  # type: ignore[arg-type]
    assert info.value.field == "rest"
    assert list(tmp_path.iterdir()) == [tmp_path / "file"]


# ---------------------------------------------------------------------------- scripted archives
class Archive:
    """A scripted API server (A) answering the archive URL with a file on another origin (B)."""

    def __init__(self, api: ScriptedServer, files: ScriptedServer, rest: RestClient) -> None:
        self.api, self.files, self.rest = api, files, rest

    def serve(self, body: Callable[[http.server.BaseHTTPRequestHandler], None]) -> None:
        url = f"{self.files.base_url}/a.tar?signature=abc"
        answer = orjson.dumps({"url": url, "expires": "2030-01-01T00:00:00Z"})
        self.api.routes[ARCHIVE_ROUTE] = lambda h: reply(h, 200, answer)
        self.files.routes["/a.tar"] = body

    def serve_tar(self, data: bytes) -> None:
        self.serve(lambda h: reply(h, 200, data, {"Content-Type": "application/x-tar"}))


@pytest.fixture
def archive() -> Iterator[Archive]:
    with scripted_server() as api, scripted_server() as files:
        config = Config(api_key="tml-scripted-key-0001", base_url=api.base_url, max_retries=0)
        with RestClient(config) as rest:
            yield Archive(api, files, rest)


def _tar(*members: tuple[tarfile.TarInfo, bytes | None], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _file(name: str, data: bytes = b"data") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def test_key_never_reaches_the_signed_url_host(archive: Archive, tmp_path: Path) -> None:
    archive.serve_tar(_tar(_file("adapter_config.json", b"{}")))
    target = download(archive.rest, PATH, output_dir=tmp_path)
    assert (target / "adapter_config.json").read_bytes() == b"{}"
    api_headers = [h for _, h in archive.api.seen]
    file_headers = [h for _, h in archive.files.seen]
    assert api_headers
    assert all(h.get("x-api-key") == "tml-scripted-key-0001" for h in api_headers)
    assert file_headers
    assert all("x-api-key" not in h for h in file_headers)
    assert all("tml-scripted-key-0001" not in str(h) for h in file_headers)


def test_nested_gzip_archive_with_an_inner_link(archive: Archive, tmp_path: Path) -> None:
    directory = tarfile.TarInfo("sub")
    directory.type = tarfile.DIRTYPE
    data = _tar(
        (directory, None),
        _file("sub/a.bin", b"\x00\x01"),
        _file("b.json", b"[]"),
        _special("alias.json", tarfile.SYMTYPE, "b.json"),
        _special("sub/hard.bin", tarfile.LNKTYPE, "sub/a.bin"),
        mode="w:gz",
    )
    archive.serve_tar(data)
    target = download(archive.rest, PATH, output_dir=tmp_path)
    assert (target / "sub" / "a.bin").read_bytes() == b"\x00\x01"
    assert (target / "alias.json").read_text() == "[]"
    assert (target / "sub" / "hard.bin").read_bytes() == b"\x00\x01"


UNSAFE = {
    "absolute": lambda out: [_file(str(out / "abs.txt"))],
    "dotdot": lambda out: [_file("ok.txt"), _file("../escape.txt")],
    "deep-dotdot": lambda out: [_file("a/../../../escape.txt")],
    "symlink-absolute": lambda out: [_special("link", tarfile.SYMTYPE, str(out))],
    "symlink-dotdot": lambda out: [_special("link", tarfile.SYMTYPE, "../../outside")],
    "write-through-link": lambda out: [
        _special("d", tarfile.SYMTYPE, "sub"),
        _file("d/x.txt"),
    ],
    "hardlink-outside": lambda out: [_special("hl", tarfile.LNKTYPE, "/etc/passwd")],
    "char-device": lambda out: [_special("dev", tarfile.CHRTYPE)],
    "block-device": lambda out: [_special("blk", tarfile.BLKTYPE)],
    "fifo": lambda out: [_special("pipe", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_archives_extract_nothing(archive: Archive, tmp_path: Path, case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out" / "inner"
    archive.serve_tar(_tar(*UNSAFE[case](outside)))
    with pytest.raises(UnsafeArchiveError, match="unsafe archive member"):
        download(archive.rest, PATH, output_dir=out)
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "out").exists()  # created for the download, removed again
    assert [p.name for p in tmp_path.rglob("*")] == ["outside"]


def test_not_a_tar(archive: Archive, tmp_path: Path) -> None:
    archive.serve_tar(b"this is not a tar archive" * 100)
    with pytest.raises(CheckpointDownloadError, match="not a readable tar"):
        download(archive.rest, PATH, output_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_leaves_nothing(archive: Archive, tmp_path: Path) -> None:
    def cut_off(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(4 * 1024 * 1024))
        handler.end_headers()
        handler.wfile.write(b"\0" * (3 * 1024 * 1024 // 2))  # 1.5 of 4 MiB
        handler.wfile.flush()
        handler.close_connection = True  # drop the connection mid-body

    archive.serve(cut_off)
    seen: list[int] = []
    with pytest.raises(CheckpointDownloadError, match=r"interrupted|truncated"):
        download(
            archive.rest,
            PATH,
            output_dir=tmp_path,
            progress=lambda done, total: seen.append(done),
        )
    assert seen
    assert seen[-1] > 0
    assert list(tmp_path.iterdir()) == []


def test_interrupt_by_the_user_leaves_nothing(archive: Archive, tmp_path: Path) -> None:
    archive.serve_tar(_tar(_file("big.bin", b"\1" * (3 * 1024 * 1024))))

    def stop_after_first_chunk(done: int, total: int | None) -> None:
        if done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download(archive.rest, PATH, output_dir=tmp_path, progress=stop_after_first_chunk)
    assert list(tmp_path.iterdir()) == []


def test_memory_stays_flat(archive: Archive, tmp_path: Path) -> None:
    # A 48 MiB archive generated on the fly (64 KiB writes): the client's peak Python
    # allocation stays near one 1 MiB chunk, not the archive's size.
    size = 48 * 1024 * 1024
    info = tarfile.TarInfo("big.bin")
    info.size = size
    header = info.tobuf(format=tarfile.PAX_FORMAT)
    trailer = b"\0" * (2 * tarfile.BLOCKSIZE)
    total = len(header) + size + len(trailer)
    block = b"\0" * (64 * 1024)

    def stream(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(total))
        handler.end_headers()
        handler.wfile.write(header)
        for _ in range(size // len(block)):
            handler.wfile.write(block)
        handler.wfile.write(trailer)

    archive.serve(stream)
    tracemalloc.start()
    try:
        target = download(archive.rest, PATH, output_dir=tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (target / "big.bin").stat().st_size == size
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes for a {total}-byte archive"


def test_unknown_length_reports_none(archive: Archive, tmp_path: Path) -> None:
    data = _tar(_file("a.txt", b"hello"))

    def no_length(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(data)
        handler.close_connection = True

    archive.serve(no_length)
    totals: set[int | None] = set()
    target = download(archive.rest, PATH, output_dir=tmp_path, progress=lambda d, t: totals.add(t))
    assert totals == {None}
    assert (target / "a.txt").read_text() == "hello"


# ---------------------------------------------------------------------------- torch engine
@pytest.mark.torch
def test_torch_checkpoint_round_trip(torch_server: ServerHandle, tmp_path: Path) -> None:
    from safetensors.torch import load_file as load_torch

    seeder = Seeder(torch_server)
    try:
        model = seeder.model(seeder.session(), rank=4)
        datum = {
            "model_input": {"chunks": [{"type": "encoded_text", "tokens": [5, 6, 7, 8]}]},
            "loss_fn_inputs": {
                "target_tokens": {"data": [6, 7, 8, 9], "dtype": "int64", "shape": [4]}
            },
        }
        seeder.result(
            seeder.post(
                "/forward_backward",
                {
                    "forward_backward_input": {"data": [datum], "loss_fn": "cross_entropy"},
                    "model_id": model,
                    "seq_id": seeder._next(model),
                },
            )
        )
        seeder.result(
            seeder.post(
                "/optim_step",
                {
                    "model_id": model,
                    "seq_id": seeder._next(model),
                    "adam_params": {"learning_rate": 0.01},
                },
            )
        )
        path = seeder.save(model, "trained")
    finally:
        seeder.close()
    config = Config(api_key=torch_server.api_key, base_url=torch_server.base_url)
    with RestClient(config) as rest:
        target = download(rest, path, output_dir=tmp_path)
        info = rest.get_weights_info_by_tinker_path(path)
    tensors = load_torch(str(target / "adapter_model.safetensors"))
    a_keys = [k for k in tensors if k.endswith("lora_A.weight")]
    b_keys = [k for k in tensors if k.endswith("lora_B.weight")]
    assert a_keys
    assert len(a_keys) == len(b_keys)
    assert all(tensors[k].shape[0] == info.lora_rank == 4 for k in a_keys)
    assert any(tensors[k].abs().sum() > 0 for k in b_keys)  # trained: B moved off zero
    config_json = json.loads((target / "adapter_config.json").read_text())
    assert config_json["r"] == 4
    for file in target.iterdir():
        assert _server_copy(torch_server, file.name, file.read_bytes())


@pytest.mark.torch
def test_training_client_checkpoint_download_and_restore(
    torch_server: ServerHandle, tmp_path: Path
) -> None:
    # The whole client path: train, save, download through create_rest_client(), and load the
    # same checkpoint into a new training client that computes exactly the same loss.
    from safetensors.torch import load_file as load_torch

    from tinkex_actors import ServiceClient
    from tinkex_actors.types import AdamParams, Datum, LoraConfig, ModelInput

    config = Config(api_key=torch_server.api_key, base_url=torch_server.base_url)
    with ServiceClient(config) as service:
        training = service.create_lora_training_client(
            "tinkex/tiny-llama", lora_config=LoraConfig(rank=4)
        )
        ids = training.get_tokenizer().encode("The quick brown fox jumps over the lazy dog.")
        datum = Datum(
            model_input=ModelInput.from_ints(ids[:-1]),
            loss_fn_inputs={"target_tokens": ids[1:], "weights": [1.0] * (len(ids) - 1)},
        )
        training.forward_backward([datum], "cross_entropy").result(120)
        training.optim_step(AdamParams(learning_rate=1e-2)).result(120)
        path = training.save_state("dl-restore").result(120).path
        rest = service.create_rest_client()
        with rest:
            assert isinstance(rest, RestClient)
            target = download(rest, path, output_dir=tmp_path)
        restored = service.create_training_client_from_state(path)
        before = training.forward([datum], "cross_entropy").result(120).metrics
        after = restored.forward([datum], "cross_entropy").result(120).metrics
    assert before == after
    tensors = load_torch(str(target / "adapter_model.safetensors"))
    assert all(t.shape[0] == 4 for k, t in tensors.items() if k.endswith("lora_A.weight"))
    assert (target / "optimizer.safetensors").is_file()  # save_state keeps the AdamW moments
