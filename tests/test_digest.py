"""Streaming digests checked against hashlib: Digester, digest_bytes/stream, reader, writer."""

from __future__ import annotations

import array
import hashlib
import io
import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regstore.digest import (
    CHUNK_SIZE,
    Digester,
    DigestingReader,
    DigestingWriter,
    digest_bytes,
    digest_stream,
    verify,
)
from regstore.errors import DigestMismatchError, InvalidReferenceError, RegstoreError
from regstore.reference import Digest

ALGORITHMS = ["sha256", "sha512"]
PAYLOADS = [b"", b"a", b"hello world\n", os.urandom(4096), os.urandom(CHUNK_SIZE + 17)]


def reference_digest(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("data", PAYLOADS, ids=lambda d: f"{len(d)}B")
def test_digest_bytes_matches_hashlib(algorithm: str, data: bytes) -> None:
    digest = digest_bytes(data, algorithm)
    assert digest == reference_digest(data, algorithm)
    assert isinstance(digest, Digest)
    assert digest.algorithm == algorithm


def test_digest_bytes_defaults_to_sha256() -> None:
    assert digest_bytes(b"x") == reference_digest(b"x")
    # the well-known digest of the OCI empty descriptor
    assert digest_bytes(b"{}") == (
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    )


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_digester_chunked_equals_whole(algorithm: str) -> None:
    data = os.urandom(100_003)
    whole = Digester(algorithm)
    whole.update(data)
    for size in (1, 7, 4096, 65536, len(data)):
        parts = Digester(algorithm)
        for chunk in chunked(data, size):
            parts.update(chunk)
        assert parts.digest() == whole.digest() == reference_digest(data, algorithm)
        assert parts.size == whole.size == len(data)


@settings(max_examples=200, deadline=None, database=None)
@given(data=st.binary(max_size=5000), cuts=st.lists(st.integers(0, 5000), max_size=10))
def test_any_split_gives_the_same_digest(data: bytes, cuts: list[int]) -> None:
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    digester = Digester()
    for start, end in itertools.pairwise(bounds):
        digester.update(data[start:end])
    assert digester.digest() == reference_digest(data)
    assert digester.size == len(data)


def test_digester_accepts_bytearray_and_memoryview() -> None:
    digester = Digester()
    digester.update(bytearray(b"ab"))
    digester.update(memoryview(b"cd"))
    assert digester.digest() == reference_digest(b"abcd")
    assert digester.size == 4


def test_digester_counts_bytes_of_wide_memoryviews() -> None:
    numbers = array.array("I", range(10))  # 10 items of 4 bytes
    digester = Digester()
    digester.update(memoryview(numbers))
    assert digester.size == 10 * numbers.itemsize
    assert digester.digest() == reference_digest(numbers.tobytes())


def test_digester_digest_can_be_taken_midway() -> None:
    digester = Digester()
    digester.update(b"abc")
    assert digester.digest() == reference_digest(b"abc")
    digester.update(b"def")
    assert digester.digest() == reference_digest(b"abcdef")


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "SHA256", "sha384", "tarsum"])
def test_digester_refuses_unverifiable_algorithms(algorithm: str) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        Digester(algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_digest_stream_over_a_file_object(algorithm: str) -> None:
    data = os.urandom(3 * 1000 + 1)
    for chunk_size in (1, 1000, CHUNK_SIZE):
        digest, size = digest_stream(io.BytesIO(data), algorithm, chunk_size=chunk_size)
        assert digest == reference_digest(data, algorithm)
        assert size == len(data)


def test_digest_stream_over_an_iterable_of_chunks() -> None:
    data = os.urandom(10_000)
    digest, size = digest_stream(iter(chunked(data, 333)))
    assert (digest, size) == (reference_digest(data), len(data))
    assert digest_stream([]) == (reference_digest(b""), 0)


def test_digest_stream_reads_in_bounded_chunks() -> None:
    class Recorder(io.BytesIO):
        sizes: list[int] = []

        def read(self, n: int | None = -1) -> bytes:
            self.sizes.append(n if n is not None else -1)
            return super().read(n)

    stream = Recorder(b"x" * 10)
    digest_stream(stream, chunk_size=4)
    assert stream.sizes and all(n == 4 for n in stream.sizes)


def test_verify_passes_and_fails() -> None:
    good = reference_digest(b"x")
    bad = reference_digest(b"y")
    verify("blob", good, Digest(good), expected_size=1, actual_size=1)
    verify("blob", good, good)  # sizes are optional
    verify("blob", good, good, expected_size=1)  # one size alone is not compared
    with pytest.raises(DigestMismatchError) as info:
        verify("blob x", good, bad, expected_size=1, actual_size=1)
    assert (info.value.expected, info.value.actual) == (good, bad)
    with pytest.raises(DigestMismatchError) as info:
        verify("blob x", good, good, expected_size=1, actual_size=2)
    assert (info.value.expected_size, info.value.actual_size) == (1, 2)
    assert "size 2 instead of 1" in str(info.value)


# -- DigestingReader -------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_reader_verifies_what_was_read(algorithm: str) -> None:
    data = os.urandom(50_000)
    expected = reference_digest(data, algorithm)
    reader = DigestingReader(io.BytesIO(data), expected, expected_size=len(data))
    out = bytearray()
    while chunk := reader.read(4096):
        out += chunk
    assert bytes(out) == data
    assert reader.verify() == expected
    assert isinstance(reader.verify(), Digest)
    assert reader.digester.size == len(data)
    assert reader.digester.algorithm == algorithm


def test_reader_read_all_and_readinto() -> None:
    data = os.urandom(10_000)
    reader = DigestingReader(io.BytesIO(data), reference_digest(data))
    buffer = bytearray(3000)
    got = bytearray()
    while n := reader.readinto(buffer):
        got += buffer[:n]
    assert bytes(got) == data
    reader.verify()

    reader = DigestingReader(io.BytesIO(data), reference_digest(data))
    assert reader.read() == data
    assert reader.read() == b""
    reader.verify()


def test_reader_readinto_a_memoryview_slice() -> None:
    data = b"0123456789"
    reader = DigestingReader(io.BytesIO(data), reference_digest(data))
    backing = bytearray(20)
    assert reader.readinto(memoryview(backing)[5:15]) == 10
    assert bytes(backing[5:15]) == data
    reader.verify()


def test_reader_failure_carries_the_fields() -> None:
    data = b"the real bytes"
    announced = reference_digest(b"other bytes")
    reader = DigestingReader(
        io.BytesIO(data), announced, expected_size=len(data), subject="blob of library/x"
    )
    assert reader.read() == data
    with pytest.raises(DigestMismatchError) as info:
        reader.verify()
    error = info.value
    assert isinstance(error, RegstoreError)
    assert error.subject == "blob of library/x"
    assert error.expected == announced
    assert error.actual == reference_digest(data)
    assert error.expected_size == error.actual_size == len(data)
    assert "blob of library/x" in str(error) and announced in str(error)
    assert reference_digest(data) in str(error)


def test_reader_detects_a_short_read_as_a_size_mismatch() -> None:
    data = b"0123456789"
    reader = DigestingReader(io.BytesIO(data), reference_digest(data), expected_size=10)
    reader.read(4)
    with pytest.raises(DigestMismatchError) as info:
        reader.verify()
    assert (info.value.expected_size, info.value.actual_size) == (10, 4)


def test_reader_detects_a_size_mismatch_with_a_right_digest() -> None:
    data = b"0123456789"
    reader = DigestingReader(io.BytesIO(data), reference_digest(data), expected_size=11)
    reader.read()
    with pytest.raises(DigestMismatchError) as info:
        reader.verify()
    assert info.value.actual == info.value.expected
    assert (info.value.expected_size, info.value.actual_size) == (11, 10)


def test_reader_rejects_a_bad_expected_digest() -> None:
    with pytest.raises(InvalidReferenceError):
        DigestingReader(io.BytesIO(b""), "sha256:nothex")


def test_reader_close_closes_the_raw_stream() -> None:
    raw = io.BytesIO(b"x")
    DigestingReader(raw, reference_digest(b"x")).close()
    assert raw.closed


# -- DigestingWriter -------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_writer_hashes_what_it_writes(algorithm: str) -> None:
    data = os.urandom(20_000)
    raw = io.BytesIO()
    writer = DigestingWriter(raw, algorithm)
    for chunk in chunked(data, 999):
        assert writer.write(chunk) == len(chunk)
    assert raw.getvalue() == data
    assert writer.size == len(data)
    assert writer.digest() == reference_digest(data, algorithm)


def test_writer_accepts_bytearray_and_memoryview() -> None:
    raw = io.BytesIO()
    writer = DigestingWriter(raw)
    writer.write(bytearray(b"ab"))
    writer.write(memoryview(b"cd"))
    assert raw.getvalue() == b"abcd"
    assert writer.digest() == reference_digest(b"abcd")


def test_writer_hashes_only_what_a_raw_stream_accepted() -> None:
    class Trickle(io.RawIOBase):
        """A raw stream that takes at most 3 bytes per write, as raw streams may."""

        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:  # type: ignore[override]
            taken = bytes(b[:3])
            self.data += taken
            return len(taken)

    raw = Trickle()
    writer = DigestingWriter(raw)
    pending = memoryview(b"abcdefgh")
    while pending:
        pending = pending[writer.write(pending) :]
    assert bytes(raw.data) == b"abcdefgh"
    assert writer.size == 8
    assert writer.digest() == reference_digest(b"abcdefgh")


def test_writer_does_not_hash_a_failed_write() -> None:
    class Broken(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b) -> int:  # type: ignore[override]
            raise OSError("disk full")

    writer = DigestingWriter(Broken())
    with pytest.raises(OSError):
        writer.write(b"lost")
    assert writer.size == 0
    assert writer.digest() == reference_digest(b"")


def test_writer_treats_a_none_return_as_everything_written() -> None:
    class Quiet:
        def __init__(self) -> None:
            self.data = b""

        def write(self, data: bytes) -> None:
            self.data += bytes(data)

    raw = Quiet()
    writer = DigestingWriter(raw)  # type: ignore[arg-type]
    assert writer.write(b"xyz") == 3
    assert writer.digest() == reference_digest(b"xyz")


def test_writer_close_closes_the_raw_stream() -> None:
    raw = io.BytesIO()
    DigestingWriter(raw).close()
    assert raw.closed
