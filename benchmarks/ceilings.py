"""The machine's ceilings, each run as its own process by benchmarks/run.py.

    python benchmarks/ceilings.py get URL                 GET to nowhere (loopback serving)
    python benchmarks/ceilings.py get-hash URL            GET + sha256 (what memory:// can reach)
    python benchmarks/ceilings.py get-hash-keep URL       GET + sha256, the bytes kept in memory
                                                          (what a memory:// store must also do)
    python benchmarks/ceilings.py sha256 SIZE             hashlib.sha256 of SIZE bytes
    python benchmarks/ceilings.py write PATH SIZE         write SIZE bytes to PATH, fsync'd
    python benchmarks/ceilings.py write-direct PATH SIZE  the same with O_DIRECT (no page cache)
    python benchmarks/ceilings.py fsyncs DIR F [D [S [N]]]  F small files written, fsync'd and
                                                          renamed, D directory fsyncs and S
                                                          syncfs calls, from N threads (4)
    python benchmarks/ceilings.py count-fsyncs CMD...     run regstore's CLI, print its file and
                                                          directory fsyncs and syncfs calls
    python benchmarks/ceilings.py s3-put FILE URL OPTS    s3fs streaming upload, 64 MiB blocks
    python benchmarks/ceilings.py s3-get URL OPTS         one streamed GET to nowhere (via s3fs)

Each prints one JSON line ``{"seconds": ...}``: the time of the work itself, without the
interpreter's start-up (for people; run.py measures every runner's whole process).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import mmap
import os
import stat
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Any

MiB = 1 << 20
BUFFER = 4 * MiB
#: regstore's default ``--concurrency``: the threads its fsyncs come from
FSYNC_THREADS = 4


def _get(url: str, hasher: Any = None, keep: io.BytesIO | None = None) -> int:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80)
    conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
    response = conn.getresponse()
    while response.status in (301, 302, 303, 307):  # the registry may redirect blob GETs
        response.read()
        return _get(response.getheader("Location") or "", hasher, keep)
    if response.status != 200:
        raise SystemExit(f"GET {url}: {response.status}")
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    total = 0
    while n := response.readinto(buf):
        total += n
        if hasher is not None:
            hasher.update(view[:n])
        if keep is not None:
            keep.write(view[:n])
    conn.close()
    return total


def _syncfs() -> Any:
    # the same libc call regstore makes (its loader: the only regstore code a ceiling runs)
    from regstore.backends.durable import _platform_syncfs

    call = _platform_syncfs()
    if call is None:
        raise SystemExit("syncfs(2) is not available here")
    return call


def _fsyncs(directory: str, files: int, threads: int, dirs: int = 0, syncfs: int = 0) -> int:
    """A store's durability calls on small files, spread over ``threads`` threads: ``files``
    small files each written, fsync'd and renamed into place (as a store commits a file),
    ``dirs`` directory fsyncs and ``syncfs`` syncfs calls (as a store makes its new entries
    durable one by one, or in groups). Returns the number of fsync calls made."""
    call_syncfs = _syncfs() if syncfs else None
    items = max(files, dirs, syncfs, 1)

    def one(i: int) -> int:
        sub = os.path.join(directory, f"d{i % threads}")
        made = 0
        if i < files:
            tmp = os.path.join(directory, f"t{i}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.write(fd, b"x" * 200)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, os.path.join(sub, f"f{i}"))
            made += 1
        if i < dirs:
            dfd = os.open(sub, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            made += 1
        # the syncfs calls spread evenly over the items
        if call_syncfs is not None and i * syncfs // items != (i + 1) * syncfs // items:
            dfd = os.open(directory, os.O_RDONLY)
            try:
                call_syncfs(dfd)
            finally:
                os.close(dfd)
        return made

    for t in range(threads):
        os.makedirs(os.path.join(directory, f"d{t}"), exist_ok=True)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return sum(pool.map(one, range(items)))


def _s3fs(options: dict[str, Any]) -> Any:
    import s3fs

    return s3fs.S3FileSystem(
        key=options["key"],
        secret=options["secret"],
        endpoint_url=options["endpoint_url"],
        client_kwargs={"region_name": options.get("region", "us-east-1")},
        use_listings_cache=False,
    )


def main(argv: list[str]) -> None:
    kind, *args = argv
    report: dict[str, Any] = {}  # what a ceiling adds to its one JSON line
    start = time.perf_counter()
    if kind == "get":
        _get(args[0])
    elif kind == "get-hash":
        _get(args[0], hashlib.sha256())
    elif kind == "get-hash-keep":
        # a memory store holds every byte: the first touch of each page of a growing buffer
        # (page faults) is part of the work, as it is for regstore's memory:// backend
        _get(args[0], hashlib.sha256(), io.BytesIO())
    elif kind == "sha256":
        size, block = int(args[0]), os.urandom(BUFFER)
        start = time.perf_counter()
        h = hashlib.sha256()
        for _ in range(size // BUFFER):
            h.update(block)
        h.update(block[: size % BUFFER])
    elif kind == "write":
        path, size = args[0], int(args[1])
        block = memoryview(os.urandom(BUFFER))
        start = time.perf_counter()
        with open(path, "wb") as f:
            for _ in range(size // BUFFER):
                f.write(block)
            f.write(block[: size % BUFFER])
            f.flush()
            os.fsync(f.fileno())
    elif kind == "write-direct":
        # the disk's speed without the page cache: O_DIRECT writes from an aligned buffer,
        # the unaligned tail the ordinary way, then fsync (the device's cache, the file's
        # size). Where direct I/O is refused (no O_DIRECT, some FUSE filesystems) the rest is
        # written the buffered way and the report says so ("direct": false).
        path, size = args[0], int(args[1])
        aligned = mmap.mmap(-1, BUFFER)
        aligned.write(os.urandom(BUFFER))
        aligned_view = memoryview(aligned)
        o_direct = getattr(os, "O_DIRECT", 0)
        whole = size - size % 4096 if o_direct else 0
        start = time.perf_counter()
        done = 0
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | o_direct, 0o644)
            try:
                while done < whole:  # a short write ends on a block or fails the next one
                    done += os.pwrite(fd, aligned_view[: min(BUFFER, whole - done)], done)
            finally:
                os.close(fd)
        report["direct"] = bool(whole) and done == whole
        with open(path, "r+b" if done else "wb") as rest:
            rest.seek(done)
            left = size - done
            while left:
                left -= rest.write(aligned_view[: min(BUFFER, left)])
            rest.flush()
            os.fsync(rest.fileno())
    elif kind == "fsyncs":
        # the durability floor of a store write: as many fsync calls as regstore made, on
        # small files (what a crash-safe mirror of many small images mostly is), spread over
        # as many threads as regstore's default --concurrency: serial fsyncs would be slower
        # than what regstore itself can reach, so no floor
        directory, files = args[0], int(args[1])
        dirs, syncfs = (int(a) for a in [*args[2:4], "0", "0"][:2])
        threads = int(args[4]) if len(args) > 4 else FSYNC_THREADS
        os.makedirs(directory, exist_ok=True)
        start = time.perf_counter()
        _fsyncs(directory, files, threads, dirs, syncfs)
    elif kind == "count-fsyncs":
        calls = {"fsyncs": 0, "dir_fsyncs": 0, "syncfs": 0}
        real = os.fsync

        def counting(fd: int) -> None:
            calls["dir_fsyncs" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsyncs"] += 1
            real(fd)

        os.fsync = counting
        from regstore.backends import durable

        real_syncfs = durable._platform_syncfs()
        if real_syncfs is not None:

            def counting_syncfs(fd: int) -> None:
                calls["syncfs"] += 1
                real_syncfs(fd)

            durable._syncfs = counting_syncfs
        from regstore.cli import main as cli_main

        try:
            cli_main(args)
        except SystemExit as exc:
            if exc.code:
                raise
        print(json.dumps(calls))
        return
    elif kind == "s3-put":
        source, url, options = args[0], args[1], json.loads(args[2])
        fs = _s3fs(options)
        start = time.perf_counter()
        with open(source, "rb") as f, fs.open(url, "wb", block_size=64 * MiB) as out:
            while chunk := f.read(BUFFER):
                out.write(chunk)
    elif kind == "s3-get":
        # one streamed GetObject read to its end on s3fs's own loop: fewer hops and requests
        # than any reader can make (s3fs's buffered files send a ranged GET per block, and
        # each makes moto copy the whole object)
        from fsspec.asyn import sync

        url, options = args[0], json.loads(args[1])
        fs = _s3fs(options)
        bucket, _, key = url.removeprefix("s3://").partition("/")

        async def stream() -> None:
            response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
            async with response["Body"] as body:
                while await body.read(BUFFER):
                    pass

        start = time.perf_counter()
        sync(fs.loop, stream)
    else:
        raise SystemExit(f"unknown ceiling {kind!r}")
    print(json.dumps({"seconds": time.perf_counter() - start, **report}))


if __name__ == "__main__":
    main(sys.argv[1:])
