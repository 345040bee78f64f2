"""Coverage-guided fuzzing (atheris, libFuzzer) of the parsers tests/test_fuzz_parsers.py
fuzzes with hypothesis: references, manifests, sync files, ``WWW-Authenticate`` and ``Link``.

Run: ``python tests/fuzz/fuzz_parsers.py -runs=100000 -max_len=65536`` (any libFuzzer
options; ``-rss_limit_mb`` and ``-timeout`` bound memory and time per input). The first input
byte picks the parser, the rest is its input. A parser failing with anything but its
documented error is a crash: libFuzzer stops and writes the input as ``crash-*``.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports(include=["regstore"]):
    from regstore.client.challenge import merge_scopes, parse_www_authenticate
    from regstore.client.urls import parse_next_link
    from regstore.engine.syncfile import parse_sync_text
    from regstore.errors import InvalidReferenceError, ManifestInvalidError, SyncFileError
    from regstore.manifest import Manifest
    from regstore.reference import Digest, Reference


def _reference(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    for parse in (Reference.parse, Digest):
        with contextlib.suppress(InvalidReferenceError):
            parse(text)


def _manifest(data: bytes) -> None:
    try:
        m = Manifest.parse(data)
    except ManifestInvalidError:
        return
    _ = (m.digest, m.references, m.blobs, m.is_index, m.artifact_type)


def _sync_file(data: bytes) -> None:
    with contextlib.suppress(SyncFileError):
        parse_sync_text(data.decode("utf-8", "replace"))


def _www_authenticate(data: bytes) -> None:
    for challenge in parse_www_authenticate(data.decode("latin-1")):
        merge_scopes(challenge.scopes)


def _link(data: bytes) -> None:
    with contextlib.suppress(ValueError):  # documented: a target that is not a URL
        parse_next_link(data.decode("latin-1"), "http://127.0.0.1:5000/v2/a/tags/list")


TARGETS = (_reference, _manifest, _sync_file, _www_authenticate, _link)


def test_one_input(data: bytes) -> None:
    """libFuzzer's entry point: the first byte picks the parser."""
    if not data:
        return
    TARGETS[data[0] % len(TARGETS)](data[1:])


if __name__ == "__main__":
    sys.setrecursionlimit(1000)  # as a default interpreter; nesting bombs must not need more
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
