"""``sqlite:///path/store.db``: a third-party-style backend written from docs/plugin-guide.md.

It imports nothing of regstore but the plugin kit and the error tree. Blobs are SQLite BLOBs
streamed with incremental blob I/O (never held whole in memory); a write stages one row per
chunk and is published by one transaction; locks are flock files beside the database.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from typing import IO, Any, cast

from regstore.backends.kit import (
    AppendStaging,
    BlobInfo,
    ComposedBlobs,
    Digest,
    FlockLockManager,
    Option,
    Register,
    StagingEntry,
    StagingKind,
    StoreLocation,
    StoreOptionError,
    hookimpl,
    location_factory,
)
from regstore.errors import (
    BlobNotFoundError,
    ImageManifestNotFoundError,
    LayerLockedError,
    RepositoryNotFoundError,
)

SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS blobs (digest TEXT PRIMARY KEY, mtime REAL, data BLOB);
CREATE TABLE IF NOT EXISTS aside (digest TEXT PRIMARY KEY, data BLOB, mtime REAL);
CREATE TABLE IF NOT EXISTS staged (digest TEXT, seq INTEGER, data BLOB, mtime REAL);
CREATE TABLE IF NOT EXISTS manifests (name TEXT, digest TEXT, type TEXT, raw BLOB, partial INT,
                                      PRIMARY KEY (name, digest));
CREATE TABLE IF NOT EXISTS tags (name TEXT, tag TEXT, digest TEXT, PRIMARY KEY (name, tag));
"""


class RowStaging(AppendStaging):
    """The staging part: one ``staged`` row per write; ``seal`` copies the rows into a blob."""

    store: SqliteBackend

    def size(self, digest: Digest) -> int:
        sql = "SELECT COALESCE(SUM(LENGTH(data)), 0) FROM staged WHERE digest = ?"
        return int((self.store.one(sql, str(digest)) or (0,))[0])

    def append(self, digest: Digest) -> _Rows:
        return _Rows(self.store, str(digest))

    def iterate(self, digest: Digest, chunk_size: int) -> Iterator[bytes]:
        sql = "SELECT rowid FROM staged WHERE digest = ? ORDER BY seq"
        for (rowid,) in self.store.all(sql, str(digest)):
            yield bytes(self.store.one("SELECT data FROM staged WHERE rowid = ?", rowid)[0])

    def seal(self, digest: Digest) -> None:
        with self.store.connect() as db:  # one transaction: the blob appears whole
            d = str(digest)
            # the zeroblob must be the record's last column, or SQLite builds it in memory
            size = self.size(digest)
            db.execute("INSERT INTO blobs VALUES (?, ?, zeroblob(?))", (d, time.time(), size))
            (target,) = db.execute("SELECT rowid FROM blobs WHERE digest = ?", (d,)).fetchone()
            rows = db.execute("SELECT rowid FROM staged WHERE digest = ? ORDER BY seq", (d,))
            with db.blobopen("blobs", "data", target) as blob:
                for (rowid,) in rows.fetchall():
                    blob.write(db.execute("SELECT data FROM staged WHERE rowid = ?", (rowid,))
                               .fetchone()[0])  # fmt: skip
            db.execute("DELETE FROM staged WHERE digest = ?", (d,))

    def drop(self, digest: Digest) -> None:
        self.store.run("DELETE FROM staged WHERE digest = ?", str(digest))

    def entries(self) -> list[StagingEntry]:
        sql = "SELECT digest, SUM(LENGTH(data)), MAX(mtime) FROM staged GROUP BY digest"
        found = self.store.all(sql)
        key = self.store.blob_lock_key
        held = self.store.locks.is_held
        return [StagingEntry(StagingKind.UPLOAD, d, f"{self.store.url}#staged/{d}", n, m, d,
                             held(key(Digest(d)))) for d, n, m in found]  # fmt: skip


class _Rows:
    def __init__(self, store: SqliteBackend, digest: str) -> None:
        self.store, self.digest = store, digest

    def write(self, data: bytes | memoryview, /) -> int:
        sql = "INSERT INTO staged SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ? FROM staged " \
              "WHERE digest = ?"  # fmt: skip
        self.store.run(sql, self.digest, bytes(data), time.time(), self.digest)
        return len(data)

    def close(self) -> None:
        """Every row is committed as it is written."""


class _Reader:
    """A complete blob, read in pieces by SQLite's incremental blob I/O on its own connection."""

    def __init__(self, db: sqlite3.Connection, rowid: int, offset: int) -> None:
        self.db, self.blob = db, db.blobopen("blobs", "data", rowid, readonly=True)
        self.blob.seek(offset)

    def read(self, n: int = -1, /) -> bytes:
        return bytes(self.blob.read(n))

    def close(self) -> None:
        self.blob.close()
        self.db.close()


class SqliteBackend(ComposedBlobs):
    backend_name = "sqlite"
    error_types = (sqlite3.Error,)

    def __init__(self, path: str, timeout: float) -> None:
        self.path, self.timeout, self.url, self.ready = path, timeout, f"sqlite://{path}", False
        self.locks = FlockLockManager(path + ".locks")
        self.staging = RowStaging()
        self.staging.attach(self)

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        with contextlib.closing(sqlite3.connect(self.path, timeout=self.timeout)) as db:
            if not self.ready:  # once per instance (another one may be creating it right now)
                self.create_schema(db)
            with db:  # a transaction: committed on success, rolled back on error
                yield db

    def create_schema(self, db: sqlite3.Connection) -> None:
        # Two connections turning a new file into WAL at once get "database is locked" without
        # SQLite's busy wait, so the first setup is serialised across threads and processes.
        with open(self.path + ".init", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                db.executescript(SCHEMA)
            finally:
                fcntl.flock(guard, fcntl.LOCK_UN)
        self.ready = True

    def all(self, sql: str, *args: Any) -> list[Any]:
        if not os.path.exists(self.path):
            return []  # reading creates nothing
        with self.connect() as db:
            return db.execute(sql, args).fetchall()

    def one(self, sql: str, *args: Any) -> Any:
        return next(iter(self.all(sql, *args)), None)

    def run(self, sql: str, *args: Any) -> int:
        with self.connect() as db:
            return db.execute(sql, args).rowcount

    # -- complete blobs: the two primitives ComposedBlobs derives the blob half from --------
    def complete_size(self, digest: Digest) -> int | None:
        found = self.one("SELECT LENGTH(data) FROM blobs WHERE digest = ?", str(digest))
        return None if found is None else int(found[0])

    def open_complete(self, digest: Digest, offset: int) -> IO[bytes]:
        found = self.one("SELECT rowid FROM blobs WHERE digest = ?", str(digest))
        if found is None:
            raise FileNotFoundError(str(digest))
        return cast(IO[bytes], _Reader(sqlite3.connect(self.path), found[0], offset))

    def list_blobs(self) -> list[BlobInfo]:
        return [BlobInfo(*row) for row in self.all("SELECT digest, LENGTH(data), mtime FROM blobs")]

    def delete_blob(self, digest: Digest) -> None:
        if not self.run("DELETE FROM blobs WHERE digest = ?", str(digest)):
            raise BlobNotFoundError(None, str(digest))

    def quarantine_blob(self, digest: Digest) -> str:
        lock = self.locks.try_acquire(self.blob_lock_key(digest))
        if lock is None:
            raise LayerLockedError(str(digest))
        try:
            with self.connect() as db:
                sql = "INSERT OR REPLACE INTO aside SELECT digest, data, ? FROM blobs " \
                      "WHERE digest = ?"  # fmt: skip
                if not db.execute(sql, (time.time(), str(digest))).rowcount:
                    raise BlobNotFoundError(None, str(digest))
                db.execute("DELETE FROM blobs WHERE digest = ?", (str(digest),))
        finally:
            lock.release()
        return f"{self.url}#aside/{digest}"

    def list_staging(self) -> list[StagingEntry]:
        aside = self.all("SELECT digest, LENGTH(data), mtime FROM aside")
        return self.staging.entries() + [StagingEntry(StagingKind.QUARANTINE, d,
            f"{self.url}#aside/{d}", n, m, d) for d, n, m in aside]  # fmt: skip

    def drop_staging(self, entry: StagingEntry) -> bool:
        if entry.kind is not StagingKind.QUARANTINE:
            return super().drop_staging(entry)
        self.run("DELETE FROM aside WHERE digest = ? AND mtime <= ?", entry.key, entry.mtime)
        return self.one("SELECT 1 FROM aside WHERE digest = ?", entry.key) is None

    def store_exists(self) -> bool:
        return os.path.exists(self.path)

    # -- manifests ----------------------------------------------------------------------------
    def get_manifest(self, name: str, reference: str) -> tuple[bytes, str]:
        sql = "SELECT raw, type FROM manifests WHERE name = ? AND digest = COALESCE(" \
              "(SELECT digest FROM tags WHERE name = ? AND tag = ?), ?)"  # fmt: skip
        found = self.one(sql, name, name, reference, reference)
        if found is None:
            raise ImageManifestNotFoundError(name, reference)
        return bytes(found[0]), str(found[1])

    def put_manifest(self, name: str, tag: str | None, raw: bytes, media_type: str,
                     digest: Digest, partial: bool) -> None:  # fmt: skip
        with self.connect() as db:
            db.execute("INSERT OR REPLACE INTO manifests VALUES (?, ?, ?, ?, ?)",
                       (name, str(digest), media_type, raw, partial))  # fmt: skip
            if tag is not None:
                db.execute("INSERT OR REPLACE INTO tags VALUES (?, ?, ?)", (name, tag, str(digest)))

    def manifest_is_partial(self, name: str, digest: Digest) -> bool:
        found = self.one(
            "SELECT partial FROM manifests WHERE name = ? AND digest = ?", name, str(digest)
        )
        return bool(found and found[0])

    def delete_manifest(self, name: str, digest: Digest) -> None:
        if not self.run("DELETE FROM manifests WHERE name = ? AND digest = ?", name, str(digest)):
            raise ImageManifestNotFoundError(name, str(digest))
        self.run("DELETE FROM tags WHERE name = ? AND digest = ?", name, str(digest))

    def delete_tag(self, name: str, tag: str) -> None:
        if not self.run("DELETE FROM tags WHERE name = ? AND tag = ?", name, tag):
            raise ImageManifestNotFoundError(name, tag)

    def list_repositories(self) -> list[str]:
        return [row[0] for row in self.all("SELECT DISTINCT name FROM manifests")]

    def _names(self, sql: str, name: str) -> list[str]:
        if self.one("SELECT 1 FROM manifests WHERE name = ?", name) is None:
            raise RepositoryNotFoundError(name)
        return [row[0] for row in self.all(sql, name)]

    def list_tags(self, name: str) -> list[str]:
        return self._names("SELECT tag FROM tags WHERE name = ?", name)

    def list_manifests(self, name: str) -> list[str]:
        return self._names("SELECT digest FROM manifests WHERE name = ?", name)


@location_factory({"timeout": Option(float, default=30.0, help="seconds to wait for a lock")})
def open_backend(location: StoreLocation) -> SqliteBackend:
    """``sqlite:///absolute/path.db``; option ``timeout``."""
    if location.host or not location.path.startswith("/"):
        raise StoreOptionError(f"not a sqlite store URL: {location.shown}",
                               hint="write sqlite:///absolute/path.db")  # fmt: skip
    return SqliteBackend(location.path, location.options["timeout"])


@hookimpl
def regstore_register_backends(register: Register) -> None:
    register("sqlite", open_backend, "a whole store in one SQLite file (plugin-guide example)")
