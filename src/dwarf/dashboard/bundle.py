"""The vendored Mermaid, shipped as one xz-compressed tar archive and served from memory.

The browser loads Mermaid's ES-module build (an entry module and its chunks) from ``/static/mermaid/``.
Shipped as loose files, the wheel's per-file deflate compresses them poorly; one ``.tar.xz`` of them is
about 50 KB smaller. ``MERMAID`` serves the archive's members at the URLs the loose files had, decompressing
the archive once, on the first request, into memory (about 900 KB).

``pack`` makes the archive, byte for byte the same for the same files (``make mermaid``; the README beside
the archive, ``dwarf/dashboard/mermaid/README.md``, says how to upgrade Mermaid with it).
"""

from __future__ import annotations

import email.utils
import hashlib
import io
import mimetypes
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.staticfiles import NotModifiedResponse

__all__ = ["MERMAID", "ArchiveFiles", "pack"]

MERMAID_ARCHIVE = Path(__file__).resolve().parent / "mermaid" / "mermaid.tar.xz"

# pack() compresses as xz -9e but with a 1 MiB dictionary, which holds the whole bundle: the -9 default
# (64 MiB) compresses it no better, and every decompression would allocate that much. pb=0: text has no
# 2^pb-byte alignment to model (saves about 0.7 KB).
_LZMA2_TUNING = {"dict_size": 1 << 20, "pb": 0}


@dataclass(frozen=True)
class ArchiveFile:
    """One member of the archive, ready to send."""

    body: bytes
    media_type: str
    etag: str


class ArchiveFiles:
    """Serves the regular files of a ``.tar.xz`` archive by their member names.

    Route ``serve`` with a ``{path:path}`` parameter. The archive is read and decompressed once, on
    the first request, under a lock (a server's threads may ask at once). Only member names answer, so no
    path reaches outside the archive; anything else is a 404. Responses carry an ETag (the content's
    hash) and a Last-Modified (the archive file's mtime) and answer conditional requests with 304, as
    Starlette's StaticFiles does for the loose static files.
    """

    def __init__(self, archive: Path) -> None:
        self.archive = archive
        self._files: dict[str, ArchiveFile] | None = None
        self._last_modified = ""
        self._lock = threading.Lock()

    def files(self) -> dict[str, ArchiveFile]:
        """The archive's files by member name; RuntimeError if this Python cannot decompress xz."""
        with self._lock:
            if self._files is None:
                self._files = self._read()
            return self._files

    def _read(self) -> dict[str, ArchiveFile]:
        try:
            import lzma
        except ImportError as error:
            raise RuntimeError(
                f"serving {self.archive.name} needs Python's lzma module, which this Python was built "
                "without (rebuild Python with liblzma, e.g. the liblzma-dev or xz-devel package)"
            ) from error
        self._last_modified = email.utils.formatdate(self.archive.stat().st_mtime, usegmt=True)
        tar_bytes = lzma.decompress(self.archive.read_bytes(), format=lzma.FORMAT_XZ)
        files: dict[str, ArchiveFile] = {}
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
            for member in tar:
                name = PurePosixPath(member.name)
                if not member.isfile() or name.is_absolute() or ".." in name.parts:
                    continue  # pack() writes none of these; never serve one
                extracted = tar.extractfile(member)
                assert extracted is not None  # a regular file
                body = extracted.read()
                files[name.as_posix()] = ArchiveFile(
                    body=body,
                    media_type=_media_type(name.name),
                    etag=f'"{hashlib.sha256(body).hexdigest()[:32]}"',
                )
        return files

    async def serve(self, request: Request) -> Response:
        """The endpoint: the member named by the path parameter ``path``."""
        files = self._files
        if files is None:
            try:
                files = await run_in_threadpool(self.files)
            except RuntimeError as error:
                return PlainTextResponse(str(error), status_code=500)
        found = files.get(request.path_params["path"])
        if found is None:
            raise HTTPException(status_code=404)
        headers = {"etag": found.etag, "last-modified": self._last_modified}
        if _not_modified(found.etag, self._last_modified, request.headers):
            return NotModifiedResponse(Headers(headers))
        return Response(found.body, media_type=found.media_type, headers=headers)


def _media_type(name: str) -> str:
    # Browsers run module scripts only with a JavaScript type; some systems' MIME tables lack ".mjs".
    if name.endswith(".mjs"):
        return "text/javascript"
    return mimetypes.guess_type(name)[0] or "text/plain"  # as StaticFiles: LICENSE, README


def _not_modified(etag: str, last_modified: str, request: Headers) -> bool:
    """Whether a conditional request already holds this version (If-None-Match wins over
    If-Modified-Since, as in RFC 9110 and StaticFiles)."""
    if if_none_match := request.get("if-none-match"):
        tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
        return "*" in tags or etag in tags
    since = email.utils.parsedate_tz(request.get("if-modified-since", ""))
    modified = email.utils.parsedate_tz(last_modified)
    if since is None or modified is None:
        return False
    return email.utils.mktime_tz(since) >= email.utils.mktime_tz(modified)


MERMAID = ArchiveFiles(MERMAID_ARCHIVE)
"""The vendored Mermaid, served at ``/static/mermaid/{path}``."""


def tar_of(directory: Path) -> bytes:
    """An uncompressed tar of the regular files under ``directory``: sorted names relative to it, no
    directory entries, and fixed mode, owner and mtime, so the same files always give the same bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            body = path.read_bytes()
            info = tarfile.TarInfo(path.relative_to(directory).as_posix())
            info.size = len(body)
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


def pack(directory: Path, archive: Path) -> None:
    """Write the files under ``directory`` to ``archive`` as a reproducible ``.tar.xz`` (``tar_of``)."""
    import lzma

    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, **_LZMA2_TUNING}]
    archive.write_bytes(
        lzma.compress(tar_of(directory), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, filters=filters)
    )
