"""The tar of a bundle on any fsspec filesystem: written sequentially, read by member offsets.

:class:`BundleWriter` streams members into a temporary object beside the destination and
renames it when complete (a reader never sees half a bundle); blobs go straight from their
source into the tar, hashed on the way, never staged whole. :class:`BundleReader` indexes the
members' offsets with one pass over the tar headers (seeking past the data) and reads a blob
with its own ranged handle, verifying its digest as it streams.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import tarfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import IO, Any

from regstore.digest import Digester
from regstore.errors import (
    BlobNotFoundError,
    BundleInvalidError,
    DigestMismatchError,
    RegistryError,
    StoreError,
    TransportError,
    UsageError,
)
from regstore.retry import RetryBudget, RetryPolicy, is_transient
from regstore.wire import BlobSource

from .format import MAX_JSON_MEMBER, blob_member

__all__ = ["BundleReader", "BundleWriter", "MemberSource"]

log = logging.getLogger("regstore.bundle")

BLOCK = 512
#: Bytes read at once when streaming a blob into or out of the tar.
BUFFER_SIZE = 4 << 20
#: Reads of a remote tar's headers fetch this much at a time (not a whole read-ahead block).
HEADER_BLOCK_SIZE = 64 << 10
#: What a remote filesystem buffers of the tar being written (an S3 multipart part): s3fs's
#: default of 50 MiB would take half the memory a bundle may use.
WRITE_BLOCK_SIZE = 16 << 20
#: How often a source without a retry policy of its own is reopened after breaking mid-blob.
SOURCE_RESUMES = 3
#: The most tar members a bundle may have (a hostile tar of endless tiny headers is refused).
MAX_MEMBERS = 1_000_000

Opener = Callable[[int], BlobSource]


def _is_directory(fs: Any, path: str) -> bool:
    try:
        return bool(fs.isdir(path))
    except (OSError, NotImplementedError):  # cannot tell: the write says what is wrong
        return False


def _fs_and_path(url: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    # imported here: ``import regstore`` (and every CLI command) need not load fsspec
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    except (ValueError, ImportError) as exc:
        raise BundleInvalidError(f"cannot open bundle {url!r}: {exc}") from exc
    return fs, path


def _is_local(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _header(name: str, size: int, mtime: float, *, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.mtime = int(mtime)
    info.mode = 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def _member_name(url: str, raw: str) -> str:
    """The path a tar member names, spelt one way (``./a//b/`` is ``a/b``): tools that
    extract a tar treat every spelling of a path as that path. BundleInvalidError for an
    absolute name or one with a ``..`` component (no layout has them; extracting tools strip
    or refuse them, each its own way)."""
    if raw.startswith("/"):
        raise BundleInvalidError(f"{url}: member {raw!r} is an absolute path")
    if ".." in raw.split("/"):
        raise BundleInvalidError(f"{url}: member {raw!r} has a '..' component")
    name = posixpath.normpath(raw)
    if name == ".":
        raise BundleInvalidError(f"{url}: member {raw!r} names no file")
    return name


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


class BundleWriter:
    """A bundle being written to ``url`` (any fsspec URL) through a temporary name.

    Thread-safe: members are appended one at a time under a lock (a tar is sequential).
    ``excluded`` digests (what base bundles hold) are never written. Once a member fails
    half-way the tar is spoilt: every later write raises, and only :meth:`discard` remains.
    """

    def __init__(
        self,
        url: str,
        *,
        storage_options: dict[str, Any] | None = None,
        excluded: frozenset[str] = frozenset(),
        mtime: float | None = None,
    ) -> None:
        self.url = url
        self._fs, self._path = _fs_and_path(url, storage_options)
        if _is_directory(self._fs, self._path):
            # the finished bundle would be moved into it, under the temporary file's name
            raise UsageError(
                f"{url} is a directory: name the bundle file to write, such as "
                f"{url.rstrip('/')}/images.tar"
            )
        self._tmp = f"{self._path}.partial-{uuid.uuid4().hex[:12]}"
        self._excluded = excluded
        self._mtime = time.time() if mtime is None else mtime
        self._lock = threading.Lock()
        self._written: set[str] = set()
        #: ref name -> digest of the manifests tagged in this bundle (by the transfer)
        self.tagged: dict[str, str] = {}
        self._spoilt: BaseException | None = None
        parent = self._fs._parent(self._path)
        if parent:
            with contextlib.suppress(OSError, NotImplementedError):
                self._fs.makedirs(parent, exist_ok=True)
        kwargs: dict[str, Any] = {}
        if not _is_local(self._fs):
            kwargs["block_size"] = WRITE_BLOCK_SIZE
        try:
            self._file: IO[bytes] = self._fs.open(self._tmp, "wb", **kwargs)
        except OSError as exc:
            raise StoreError(f"cannot write bundle {url}: {exc}") from exc

    # -- members -------------------------------------------------------------------------------
    def _check(self) -> None:
        if self._spoilt is not None:
            raise BundleInvalidError(f"the bundle {self.url} failed earlier: {self._spoilt}")

    def add_bytes(self, name: str, data: bytes) -> None:
        """Append the member ``name`` holding ``data``."""
        with self._lock:
            self._check()
            self._file.write(_header(name, len(data), self._mtime) + data + _padding(len(data)))

    def add_directory(self, name: str) -> None:
        """Append a directory entry (skopeo's untar is happier with them)."""
        with self._lock:
            self._check()
            self._file.write(_header(name, 0, self._mtime, directory=True))

    def carries(self, digest: str) -> bool:
        """True when ``digest`` is written here or left out as a base bundle's."""
        with self._lock:
            return digest in self._written or digest in self._excluded

    @property
    def written(self) -> frozenset[str]:
        """The digests of the blobs and manifests written so far."""
        with self._lock:
            return frozenset(self._written)

    def tag(self, ref_name: str, digest: str) -> None:
        """Record that the image ``ref_name`` (``NAME:TAG``) is the manifest ``digest``."""
        with self._lock:
            self.tagged[ref_name] = digest

    def add_manifest(self, digest: str, raw: bytes) -> bool:
        """Append a manifest's exact bytes as its blob (once; never an excluded one); True
        when it was written now."""
        with self._lock:
            self._check()
            if digest in self._written or digest in self._excluded:
                return False
            self._file.write(
                _header(blob_member(digest), len(raw), self._mtime) + raw + _padding(len(raw))
            )
            self._written.add(digest)
            return True

    def add_blob(
        self,
        digest: str,
        size: int,
        opener: Opener,
        on_bytes: Callable[[int], None] | None = None,
        budget: RetryBudget | None = None,
    ) -> int:
        """Stream the blob ``digest`` of ``size`` bytes from ``opener`` into the tar; the bytes
        moved (0 when it was there already or is excluded).

        The size goes into the member's header first, so the bytes must be exactly ``size``
        and hash to ``digest``: otherwise DigestMismatchError, and the bundle is spoilt. A
        source that breaks mid-blob (transiently) is reopened where it broke, while ``budget``
        (the source's, e.g. a registry's retry policy; None: a few times) lasts: the member
        goes on where its bytes stopped.
        """
        with self._lock:
            self._check()
            if digest in self._written or digest in self._excluded:
                return 0
            if size < 0:
                raise BundleInvalidError(f"blob {digest} has no known size")
            if budget is None:
                budget = RetryPolicy(retries=SOURCE_RESUMES).budget(f"reading blob {digest}")
            try:
                self._file.write(_header(blob_member(digest), size, self._mtime))
                with budget:
                    self._stream(digest, size, opener, on_bytes, budget)
                self._file.write(_padding(size))
            except BaseException as exc:
                self._spoilt = exc
                raise
            self._written.add(digest)
            return size

    def _stream(
        self,
        digest: str,
        size: int,
        opener: Opener,
        on_bytes: Callable[[int], None] | None,
        budget: RetryBudget,
    ) -> None:
        digester = Digester(digest.partition(":")[0])
        buffer = bytearray(min(BUFFER_SIZE, max(size, 1)))
        view = memoryview(buffer)
        while digester.size < size:
            before = digester.size
            try:
                source = opener(digester.size)
            except (TransportError, RegistryError) as exc:
                if not is_transient(exc):
                    raise
                budget.retry_or_raise(exc)
                continue
            try:
                if source.offset != digester.size:
                    _skip(source, digester.size - source.offset, view)
                while digester.size < size:
                    n = source.readinto(view[: min(len(view), size - digester.size)])
                    if n == 0:
                        break
                    chunk = view[:n]
                    digester.update(chunk)
                    self._file.write(chunk)
                    if on_bytes is not None:
                        on_bytes(n)
                else:
                    break
                # the source ended early: a verdict after the loop (not a transient failure)
                raise DigestMismatchError(
                    f"blob {digest} for bundle {self.url}",
                    expected=digest,
                    expected_size=size,
                    actual_size=digester.size,
                )
            except (TransportError, RegistryError) as exc:
                if not is_transient(exc):
                    raise
                if digester.size > before:
                    budget.progress()  # bytes arrived: the next pause starts short again
                budget.retry_or_raise(exc)
                log.info("blob %s broke at %d bytes (%s); resuming", digest, digester.size, exc)
            finally:
                source.close()
        actual = digester.digest()
        if str(actual) != digest or digester.size != size:
            raise DigestMismatchError(
                f"blob {digest} for bundle {self.url}",
                expected=digest,
                actual=str(actual),
                expected_size=size,
                actual_size=digester.size,
            )

    # -- the end -------------------------------------------------------------------------------
    def commit(self) -> None:
        """End the tar and rename it to its destination (an existing bundle is replaced)."""
        with self._lock:
            self._check()
            try:
                self._file.write(b"\0" * (2 * BLOCK))
                self._file.close()
                # a rename on a local disk (replacing an older bundle atomically), a server-side
                # copy on S3
                self._fs.mv(self._tmp, self._path)
            except OSError as exc:
                self._spoilt = exc
                raise StoreError(f"cannot complete bundle {self.url}: {exc}") from exc

    def discard(self) -> None:
        """Drop the temporary object (after a failure); the destination is untouched."""
        with self._lock:
            self._spoilt = self._spoilt or BundleInvalidError("discarded")
            with contextlib.suppress(Exception):
                self._file.close()
            with contextlib.suppress(Exception):
                self._fs.rm(self._tmp)


def _skip(source: BlobSource, count: int, view: memoryview) -> None:
    if count < 0:
        raise TransportError(f"source stream starts {-count} bytes after the wanted offset")
    while count > 0:
        n = source.readinto(view[: min(count, len(view))])
        if n == 0:
            raise TransportError("blob stream ended while skipping bytes already written")
        count -= n


# -- reading -------------------------------------------------------------------------------


class BundleReader:
    """A bundle's tar at ``url``, its members indexed by one pass over the headers.

    ``members`` maps a member name to ``(data offset, size)``; ``truncated`` names members
    whose data runs past the end of the file (a tar cut short: what followed is missing).
    ``stop_after`` ends the pass early once that member has been seen (``bundle ls`` reads
    only the first few headers).
    """

    def __init__(
        self,
        url: str,
        *,
        storage_options: dict[str, Any] | None = None,
        stop_after: str | None = None,
    ) -> None:
        self.url = url
        self._fs, self._path = _fs_and_path(url, storage_options)
        self.members: dict[str, tuple[int, int]] = {}
        self.truncated: set[str] = set()
        self.complete = False
        try:
            file_size = int(self._fs.size(self._path))
        except FileNotFoundError:
            raise BundleInvalidError(f"no bundle at {url}") from None
        except OSError as exc:
            raise StoreError(f"cannot read bundle {url}: {exc}") from exc
        with self._open(HEADER_BLOCK_SIZE) as fh:
            try:
                tar = tarfile.open(fileobj=fh, mode="r:")  # noqa: SIM115  (fh is closed)
                last_offset = -1
                count = 0
                while (info := tar.next()) is not None:
                    # tarfile keeps every TarInfo; a bundle of many blobs need not
                    tar.members.clear()  # type: ignore[attr-defined]  # (untyped in typeshed)
                    # a hostile header (a negative GNU base-256 size) moves tarfile's offset
                    # backwards: the pass would loop over the same headers forever
                    if info.size < 0:
                        raise BundleInvalidError(f"{url}: member {info.name!r} has a negative size")
                    if info.offset <= last_offset:
                        raise BundleInvalidError(f"{url}: member {info.name!r} is out of order")
                    last_offset = info.offset
                    count += 1
                    if count > MAX_MEMBERS:
                        raise BundleInvalidError(f"{url} has over {MAX_MEMBERS} members")
                    cut = info.offset_data + info.size > file_size
                    if info.isreg():
                        name = _member_name(url, info.name)
                        if name in self.members:
                            # which copy counts would depend on the reader (ls the first, a
                            # tar-extracting tool the last): refused, whatever the spelling
                            spelt = "" if name == info.name else f" (once as {info.name!r})"
                            raise BundleInvalidError(
                                f"{url} holds the member {name!r} twice{spelt}"
                            )
                        self.members[name] = (info.offset_data, info.size)
                        if cut:
                            self.truncated.add(name)
                        if stop_after is not None and name == stop_after:
                            return
                    if cut:
                        # nothing follows a member whose data runs past the end: stop here,
                        # before tarfile seeks past it (beyond what a filesystem can seek to,
                        # a stated 2^44 bytes on ext4, that seek fails as EINVAL, not as the
                        # end of the tar)
                        log.info("%s ends inside %s", url, info.name)
                        return
            except tarfile.TarError as exc:
                if not self.truncated:
                    raise BundleInvalidError(f"{url} is not a readable tar: {exc}") from exc
                # cut inside a member: what comes before is readable; the cut member fails
                # its digest when read, and whatever came after it is missing
                log.info("%s ends inside %s", url, ", ".join(sorted(self.truncated)))
                return
        self.complete = True

    def _open(self, block_size: int | None = None) -> IO[bytes]:
        kwargs: dict[str, Any] = {}
        if block_size is not None and not _is_local(self._fs):
            kwargs["block_size"] = block_size
        try:
            handle: IO[bytes] = self._fs.open(self._path, "rb", **kwargs)
        except IsADirectoryError:
            raise BundleInvalidError(f"{self.url} is a directory, not a bundle") from None
        except OSError as exc:
            raise StoreError(f"cannot read bundle {self.url}: {exc}") from exc
        return handle

    def has(self, name: str) -> bool:
        """True when the tar holds member ``name``."""
        return name in self.members

    def read_member(self, name: str, limit: int = MAX_JSON_MEMBER) -> bytes:
        """The whole of a small member (JSON, a manifest); BundleInvalidError past ``limit``
        or when the tar is cut inside it."""
        offset, size = self.members[name]
        if size > limit:
            raise BundleInvalidError(f"{name} in {self.url} is {size} bytes, over {limit}")
        with self._open() as fh:
            fh.seek(offset)
            data = fh.read(size)
        if len(data) != size:
            raise BundleInvalidError(f"{self.url} is truncated inside {name}")
        return bytes(data)

    def blob_size(self, digest: str) -> int | None:
        """The size of the blob ``digest`` in the tar, or None."""
        entry = self.members.get(blob_member(digest))
        return None if entry is None else entry[1]

    def opener(self, digest: str) -> Opener:
        """``opener(offset)`` streams the blob from ``offset`` (verifying it when from 0);
        it raises BlobNotFoundError when the tar does not carry the blob."""
        name = blob_member(digest)

        def open_at(offset: int) -> BlobSource:
            # looked up when opened, not before: a sink asks for an opener even for a blob
            # it turns out to have (a delta's base blob at the target)
            if name not in self.members:
                raise BlobNotFoundError(f"bundle {self.url}", digest)
            data_offset, size = self.members[name]
            if offset >= size > 0:
                # reopened at or past the member's end: whoever reads wants more bytes than
                # the tar holds (a manifest stating a larger size); rereading cannot help
                raise DigestMismatchError(
                    f"blob {digest} in bundle {self.url} (the member is {size} bytes, "
                    f"fewer than its manifest states)",
                    expected=digest,
                )
            fh = self._open(BUFFER_SIZE)
            fh.seek(data_offset + offset)
            return MemberSource(fh, digest, size, offset, f"blob {digest} in bundle {self.url}")

        return open_at


class MemberSource:
    """A :class:`~regstore.wire.BlobSource` over one tar member. Read from offset 0, it hashes
    what passes and raises DigestMismatchError *before* handing out the last bytes when they
    do not hash to the digest (or the tar ends early), so no sink can complete a bad blob."""

    def __init__(self, fh: IO[bytes], digest: str, size: int, offset: int, subject: str) -> None:
        self._fh = fh
        self._digest = digest
        self._size = size
        self._offset = offset
        self._position = offset
        self._subject = subject
        self._digester = Digester(digest.partition(":")[0]) if offset == 0 else None

    @property
    def offset(self) -> int:
        """Where in the blob this stream starts."""
        return self._offset

    @property
    def size(self) -> int | None:
        """The blob's size."""
        return self._size

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        """The next bytes of the blob; 0 at its end."""
        left = self._size - self._position
        if left <= 0:
            return 0
        view = memoryview(buffer).cast("B")[:left]
        n = self._fh.readinto(view)  # type: ignore[attr-defined]
        n = int(n or 0)
        if n == 0:
            raise DigestMismatchError(
                f"{self._subject} (the tar ends inside it)",
                expected=self._digest,
                expected_size=self._size,
                actual_size=self._position,
            )
        self._position += n
        if self._digester is not None:
            self._digester.update(view[:n])
            if self._position == self._size:
                actual = str(self._digester.digest())
                if actual != self._digest:
                    raise DigestMismatchError(self._subject, expected=self._digest, actual=actual)
        return n

    def close(self) -> None:
        """Close the file handle."""
        self._fh.close()
