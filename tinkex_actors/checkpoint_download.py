"""``CheckpointDownload``: fetch a checkpoint archive and extract it safely.

``CheckpointDownload.download(rest, "tinker://<run>/<kind>/<name>", output_dir=..., force=False,
progress=fn)`` asks the server for a signed archive URL, streams the archive into a temporary
file next to the output (memory stays flat whatever the size), extracts it into a temporary
directory (refusing unsafe members, see :mod:`tinkex_actors._safe_tar`), then renames that
directory into place as ``output_dir/<run>_<kind>_<name>`` (the path after ``tinker://`` with
``/`` replaced by ``_``, as Tinkex names it). The temporary archive is removed whatever happens;
a failed or interrupted download leaves neither a partial directory nor a temporary file.

The signed URL gets no API key unless it is on the base URL's own origin
(``HTTPTransport.stream`` decides per hop). See ``docs/checkpoints.md``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeAlias

from tinkex_actors import _constants as c
from tinkex_actors._logging import get_logger
from tinkex_actors._safe_tar import extract_safely
from tinkex_actors.errors import (
    APIConnectionError,
    CheckpointDownloadError,
    CheckpointExistsError,
    ValidationError,
)
from tinkex_actors.futures import ActorFuture
from tinkex_actors.rest import RestClient
from tinkex_actors.transport import HTTPTransport
from tinkex_actors.types import ParsedCheckpointTinkerPath

__all__ = ["CheckpointDownload", "ProgressFn", "download"]

#: ``progress(downloaded_bytes, total_bytes)``; ``total_bytes`` is None when the server does
#: not announce a length.
ProgressFn: TypeAlias = Callable[[int, int | None], object]
PathLike: TypeAlias = str | os.PathLike[str]


class CheckpointDownload:
    """Download and extract checkpoint archives (see the module docstring)."""

    @staticmethod
    def target_dir(tinker_path: str, output_dir: PathLike | None = None) -> Path:
        """Where :meth:`download` puts a checkpoint: ``output_dir/<run>_<kind>_<name>``.

        Raises:
            InvalidTinkerPathError: ``tinker_path`` is malformed.
        """
        parsed = ParsedCheckpointTinkerPath.from_tinker_path(tinker_path)
        return _output_dir(output_dir) / _dir_name(parsed)

    @staticmethod
    def download(
        rest: RestClient,
        tinker_path: str,
        *,
        output_dir: PathLike | None = None,
        force: bool = False,
        progress: ProgressFn | None = None,
    ) -> Path:
        """Fetch a checkpoint's archive and extract it; return the extraction directory.

        Args:
            rest: the tenant's RestClient (its transport streams the archive).
            tinker_path: ``tinker://<run>/<weights|sampler_weights>/<name>``.
            output_dir: where the checkpoint directory goes (default: the current directory;
                created if missing).
            force: replace an existing checkpoint directory (swapped in only once the new
                one is complete).
            progress: called in this thread as ``progress(downloaded, total)`` once before the
                first byte and after every chunk; ``total`` is None when unknown. An exception
                it raises aborts the download (and cleans up).

        Returns:
            ``output_dir/<run>_<kind>_<name>`` holding the archive's files.

        Raises:
            InvalidTinkerPathError / ValidationError: bad arguments (nothing is sent).
            CheckpointExistsError: the directory exists and ``force`` is False (nothing is sent).
            NotFoundError, APIStatusError...: the server refused the archive URL or download.
            UnsafeArchiveError: an archive member could escape the directory or is special.
            CheckpointDownloadError: the download was cut off, or the archive is unreadable.
        """
        parsed, target, callback = _check(rest, tinker_path, output_dir, force, progress)
        return _download(rest, parsed, target, force, callback)

    @staticmethod
    def download_async(
        rest: RestClient,
        tinker_path: str,
        *,
        output_dir: PathLike | None = None,
        force: bool = False,
        progress: ProgressFn | None = None,
    ) -> ActorFuture[Path]:
        """:meth:`download` on ``rest``'s worker pool (``progress`` runs in a pool thread)."""
        parsed, target, callback = _check(rest, tinker_path, output_dir, force, progress)
        return rest._submit(lambda: _download(rest, parsed, target, force, callback))


def download(
    rest: RestClient,
    tinker_path: str,
    *,
    output_dir: PathLike | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> Path:
    """Same as :meth:`CheckpointDownload.download`."""
    return CheckpointDownload.download(
        rest, tinker_path, output_dir=output_dir, force=force, progress=progress
    )


# ---------------------------------------------------------------------------- internals
def _dir_name(parsed: ParsedCheckpointTinkerPath) -> str:
    return parsed.tinker_path.removeprefix(c.TINKER_SCHEME).replace("/", "_")


def _output_dir(output_dir: object) -> Path:
    if output_dir is None:
        return Path.cwd()
    if not isinstance(output_dir, str | os.PathLike) or not os.fspath(output_dir):
        raise ValidationError(
            f"expected a directory path, got {type(output_dir).__name__}", field="output_dir"
        )
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise ValidationError(f"{str(path)!r} exists and is not a directory", field="output_dir")
    return path


def _check(
    rest: object, tinker_path: object, output_dir: object, force: object, progress: object
) -> tuple[ParsedCheckpointTinkerPath, Path, ProgressFn | None]:
    if not isinstance(rest, RestClient):
        raise ValidationError(f"expected a RestClient, got {type(rest).__name__}", field="rest")
    parsed = ParsedCheckpointTinkerPath.from_tinker_path(tinker_path)  # type: ignore[arg-type]
    if not isinstance(force, bool):
        raise ValidationError(f"expected a bool, got {type(force).__name__}", field="force")
    if progress is not None and not callable(progress):
        raise ValidationError(
            f"expected a callable (downloaded, total), got {type(progress).__name__}",
            field="progress",
        )
    target = _output_dir(output_dir) / _dir_name(parsed)
    if not force and (target.exists() or target.is_symlink()):
        raise CheckpointExistsError(
            f"{str(target)!r} already exists; pass force=True (CLI: --force) to replace it"
        )
    return parsed, target, progress


def _download(
    rest: RestClient,
    parsed: ParsedCheckpointTinkerPath,
    target: Path,
    force: bool,
    progress: ProgressFn | None,
) -> Path:
    log = get_logger("checkpoint_download")
    signed = rest.get_checkpoint_archive_url_by_tinker_path(parsed.tinker_path)
    created = _make_dirs(target.parent)
    archive: Path | None = None
    staging: Path | None = None
    try:
        fd, name = tempfile.mkstemp(prefix=c.DOWNLOAD_TMP_PREFIX, suffix=".tar", dir=target.parent)
        archive = Path(name)
        with os.fdopen(fd, "wb") as sink:
            size = _fetch(rest.transport, signed.url, sink, progress, parsed.tinker_path)
        staging = Path(tempfile.mkdtemp(prefix=c.DOWNLOAD_TMP_PREFIX, dir=target.parent))
        files = extract_safely(archive, staging)
        _install(staging, target, force)
        staging = None
        log.info(
            "tinkex.checkpoint.downloaded",
            tinker_path=parsed.tinker_path,
            bytes=size,
            files=len(files),
            path=str(target),
        )
        return target
    except BaseException:
        # Also on KeyboardInterrupt: leave nothing half-made behind.
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
            staging = None
        if archive is not None:
            archive.unlink(missing_ok=True)
            archive = None
        for directory in reversed(created):
            try:
                directory.rmdir()
            except OSError:
                break  # not empty (someone else wrote there): keep it and its parents
        raise
    finally:
        if archive is not None:
            archive.unlink(missing_ok=True)


def _make_dirs(directory: Path) -> list[Path]:
    """Create ``directory`` and missing parents; return those created, outermost first."""
    missing: list[Path] = []
    probe = directory
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointDownloadError(f"cannot create {str(directory)!r}: {exc}") from exc
    return list(reversed(missing))


def _fetch(
    transport: HTTPTransport,
    url: str,
    sink: BinaryIO,
    progress: ProgressFn | None,
    tinker_path: str,
) -> int:
    done = 0
    with transport.stream(url) as body:
        total = body.content_length
        if progress is not None:
            progress(0, total)
        try:
            for chunk in body:
                sink.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        except APIConnectionError as exc:
            raise CheckpointDownloadError(
                f"download of {tinker_path} interrupted after {done} bytes: {exc}"
            ) from exc
        except OSError as exc:
            raise CheckpointDownloadError(f"cannot write the archive: {exc}") from exc
    if total is not None and done != total:
        raise CheckpointDownloadError(
            f"download of {tinker_path} truncated: {done} of {total} bytes"
        )
    return done


def _install(staging: Path, target: Path, force: bool) -> None:
    """Rename the complete ``staging`` directory to ``target`` (replacing it if ``force``)."""
    try:
        if not (target.exists() or target.is_symlink()):
            os.rename(staging, target)
            return
        if not force:
            raise CheckpointExistsError(
                f"{str(target)!r} appeared during the download; pass force=True to replace it"
            )
        old = target.with_name(f"{c.DOWNLOAD_TMP_PREFIX}old-{uuid.uuid4().hex}")
        os.rename(target, old)
        try:
            os.rename(staging, target)
        except OSError:
            os.rename(old, target)
            raise
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    except CheckpointExistsError:
        raise
    except OSError as exc:
        raise CheckpointDownloadError(
            f"cannot move the checkpoint into {str(target)!r}: {exc}"
        ) from exc
