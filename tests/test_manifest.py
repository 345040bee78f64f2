"""Manifests: every media type regstore reads, exact bytes, digests, and hostile input.

Expected digests are computed here with hashlib, independently of regstore's own digest code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
from typing import Any

import pytest

from regstore.errors import InvalidReferenceError, ManifestInvalidError, RegstoreError
from regstore.manifest import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST_V1,
    DOCKER_MANIFEST_V1_SIGNED,
    DOCKER_MANIFEST_V2,
    INDEX_MEDIA_TYPES,
    MANIFEST_ACCEPT,
    MANIFEST_MAX_SIZE,
    MANIFEST_MEDIA_TYPES,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    Platform,
    SignedManifest,
    digest_of,
    media_type_of,
    parse_manifest,
)
from regstore.reference import Digest

EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob(content: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(content), "size": len(content), **extra}


CONFIG = blob(b'{"architecture":"amd64","os":"linux"}', DOCKER_CONFIG)
LAYER_A = blob(b"layer a", DOCKER_LAYER)
LAYER_B = blob(b"layer b", DOCKER_LAYER)
OCI_CONFIG_DESC = blob(b'{"architecture":"arm64","os":"linux"}', OCI_CONFIG)
OCI_LAYER_A = blob(b"oci layer a", OCI_LAYER_GZIP)
OCI_LAYER_B = blob(b"oci layer b", OCI_LAYER_GZIP, annotations={"org.example": "b"})


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=3).encode()


def docker_v2(layers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_V2,
        "config": CONFIG,
        "layers": [LAYER_A, LAYER_B] if layers is None else layers,
    }


def oci_manifest(*, media_type: bool = True, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"schemaVersion": 2}
    if media_type:
        doc["mediaType"] = OCI_MANIFEST
    doc.update(config=OCI_CONFIG_DESC, layers=[OCI_LAYER_A, OCI_LAYER_B], **extra)
    return doc


def child(raw: bytes, media_type: str, os_: str, arch: str, variant: str | None = None):
    platform = {"os": os_, "architecture": arch}
    if variant:
        platform["variant"] = variant
    return blob(raw, media_type, platform=platform)


AMD64_RAW = encode(docker_v2())
ARM64_RAW = encode(oci_manifest())


def docker_list() -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [
            child(AMD64_RAW, DOCKER_MANIFEST_V2, "linux", "amd64"),
            child(ARM64_RAW, DOCKER_MANIFEST_V2, "linux", "arm64", "v8"),
        ],
    }


def oci_index(*, media_type: bool = True) -> dict[str, Any]:
    doc: dict[str, Any] = {"schemaVersion": 2}
    if media_type:
        doc["mediaType"] = OCI_INDEX
    doc["manifests"] = [
        child(AMD64_RAW, OCI_MANIFEST, "linux", "amd64"),
        child(ARM64_RAW, OCI_MANIFEST, "linux", "arm", "v7"),
    ]
    doc["annotations"] = {"org.opencontainers.image.ref.name": "v1"}
    return doc


# -- the media types -----------------------------------------------------------------------


def test_docker_schema2() -> None:
    raw = encode(docker_v2())
    m = Manifest.parse(raw, DOCKER_MANIFEST_V2)
    assert m.media_type == DOCKER_MANIFEST_V2
    assert m.raw == raw
    assert m.digest == sha256(raw)
    assert isinstance(m.digest, Digest)
    assert m.size == len(raw)
    assert m.config is not None and m.config.digest == CONFIG["digest"]
    assert m.config.media_type == DOCKER_CONFIG and m.config.size == CONFIG["size"]
    assert [d.digest for d in m.layers] == [LAYER_A["digest"], LAYER_B["digest"]]
    assert [d.size for d in m.layers] == [LAYER_A["size"], LAYER_B["size"]]
    assert m.blobs == (m.config, *m.layers)
    assert m.references == m.blobs
    assert m.manifests == ()
    assert m.subject is None
    assert not m.is_index and not m.is_schema1
    assert m.artifact_type is None


def test_docker_schema2_without_a_hint_uses_its_media_type() -> None:
    m = Manifest.parse(encode(docker_v2()))
    assert m.media_type == DOCKER_MANIFEST_V2


def test_docker_manifest_list() -> None:
    raw = encode(docker_list())
    m = Manifest.parse(raw, DOCKER_MANIFEST_LIST)
    assert m.media_type == DOCKER_MANIFEST_LIST
    assert m.is_index
    assert m.digest == sha256(raw)
    assert [d.digest for d in m.manifests] == [sha256(AMD64_RAW), sha256(ARM64_RAW)]
    assert all(d.is_manifest for d in m.manifests)
    assert m.manifests[0].platform == Platform("linux", "amd64")
    assert m.manifests[1].platform == Platform("linux", "arm64", "v8")
    assert m.blobs == () and m.config is None and m.layers == ()
    assert m.references == m.manifests


@pytest.mark.parametrize("hint", [OCI_MANIFEST, None, "", "application/json",
                                  "application/octet-stream", "text/plain"])  # fmt: skip
def test_oci_manifest_with_media_type(hint: str | None) -> None:
    raw = encode(oci_manifest())
    m = Manifest.parse(raw, hint)
    assert m.media_type == OCI_MANIFEST
    assert m.digest == sha256(raw)
    assert m.config is not None and m.config.media_type == OCI_CONFIG
    assert m.layers[1].annotations == {"org.example": "b"}


def test_oci_manifest_without_media_type_takes_the_hint() -> None:
    raw = encode(oci_manifest(media_type=False))
    m = Manifest.parse(raw, "application/vnd.oci.image.manifest.v1+json; charset=utf-8")
    assert m.media_type == OCI_MANIFEST
    # a Docker schema2 body without mediaType served as schema2 stays schema2
    m = Manifest.parse(raw, DOCKER_MANIFEST_V2)
    assert m.media_type == DOCKER_MANIFEST_V2


@pytest.mark.parametrize("hint", [None, "application/json", " Application/JSON ; q=1"])
def test_oci_manifest_without_media_type_is_sniffed(hint: str | None) -> None:
    m = Manifest.parse(encode(oci_manifest(media_type=False)), hint)
    assert m.media_type == OCI_MANIFEST  # no manifests array: a manifest
    assert len(m.layers) == 2


def test_oci_index_with_media_type() -> None:
    raw = encode(oci_index())
    m = Manifest.parse(raw, OCI_INDEX)
    assert m.media_type == OCI_INDEX
    assert m.is_index
    assert m.digest == sha256(raw)
    assert [d.platform for d in m.manifests] == [
        Platform("linux", "amd64"),
        Platform("linux", "arm", "v7"),
    ]


@pytest.mark.parametrize("hint", [None, "application/json", OCI_INDEX])
def test_oci_index_without_media_type(hint: str | None) -> None:
    m = Manifest.parse(encode(oci_index(media_type=False)), hint)
    assert m.media_type == OCI_INDEX  # a manifests array: an index
    assert len(m.manifests) == 2


def test_oci_artifact_with_subject_and_artifact_type() -> None:
    subject_raw = encode(oci_manifest())
    signature = blob(b"signature bytes", "application/vnd.dev.cosign.simplesigning.v1+json")
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1",
        "config": {"mediaType": OCI_EMPTY, "digest": EMPTY_DIGEST, "size": 2},
        "layers": [signature],
        "subject": blob(subject_raw, OCI_MANIFEST),
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }
    m = Manifest.parse(encode(doc), OCI_MANIFEST)
    assert m.artifact_type == "application/vnd.example.sbom.v1"
    assert m.config is not None and m.config.digest == EMPTY_DIGEST == sha256(b"{}")
    assert m.subject is not None
    assert m.subject.digest == sha256(subject_raw)
    assert m.subject.is_manifest
    assert m.blobs == (m.config, m.layers[0])
    assert m.references == (m.config, m.layers[0], m.subject)


def test_index_with_subject_lists_it_in_references() -> None:
    doc = oci_index()
    doc["subject"] = blob(AMD64_RAW, OCI_MANIFEST)
    m = Manifest.parse(encode(doc))
    assert m.subject is not None
    assert m.references == (*m.manifests, m.subject)


def test_descriptor_artifact_type_and_foreign_urls() -> None:
    foreign = blob(
        b"windows base",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        urls=["https://mcr.microsoft.com/a", "https://mcr.microsoft.com/b"],
    )
    doc = oci_index()
    doc["manifests"][0]["artifactType"] = "application/vnd.example"
    m = Manifest.parse(encode(doc))
    assert m.manifests[0].artifact_type == "application/vnd.example"
    assert m.manifests[1].artifact_type is None
    m = Manifest.parse(encode(docker_v2([LAYER_A, foreign])))
    assert m.layers[1].urls == ("https://mcr.microsoft.com/a", "https://mcr.microsoft.com/b")
    assert m.layers[0].urls == ()


# -- schema1 -------------------------------------------------------------------------------

V1_LAYERS = [LAYER_B["digest"], LAYER_A["digest"]]


def schema1_payload(blob_sums: list[str]) -> bytes:
    """A schema1 manifest body as docker wrote it (3-space indent), without signatures."""
    doc = {
        "schemaVersion": 1,
        "name": "library/app",
        "tag": "latest",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": s} for s in blob_sums],
        "history": [{"v1Compatibility": json.dumps({"id": str(i)})} for i in range(len(blob_sums))],
    }
    return json.dumps(doc, indent=3).encode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def protected_header(format_length: Any, format_tail: bytes) -> str:
    header = {"formatLength": format_length, "formatTail": b64url(format_tail),
              "time": "2015-03-03T00:00:00Z"}  # fmt: skip
    return b64url(json.dumps(header).encode())


def sign_schema1(payload: bytes, signatures: int = 1, headers: list[str] | None = None) -> bytes:
    """Wrap ``payload`` the way libtrust's pretty JWS does.

    The body is the payload up to its closing brace, then a ``signatures`` member, then the
    "format tail" (the closing brace); each protected header records where the payload was cut.
    """
    cut = payload.rindex(b"\n}")
    head, tail = payload[:cut], payload[cut:]
    headers = headers or [protected_header(len(head), tail)] * signatures
    entries = []
    for i, protected in enumerate(headers):
        entries.append({
            "header": {"jwk": {"crv": "P-256", "kid": f"KEY:{i}", "kty": "EC",
                               "x": "x", "y": "y"}, "alg": "ES256"},
            "signature": b64url(f"not a real signature {i}".encode()),
            "protected": protected,
        })  # fmt: skip
    signed = json.dumps(entries, indent=3).replace("\n", "\n   ")
    return head + b',\n   "signatures": ' + signed.encode() + tail


def test_schema1_unsigned() -> None:
    raw = schema1_payload(V1_LAYERS)
    for hint in (DOCKER_MANIFEST_V1, None, "application/json"):
        m = Manifest.parse(raw, hint)
        assert m.media_type == DOCKER_MANIFEST_V1
        assert m.is_schema1
        assert m.digest == sha256(raw)
        assert [d.digest for d in m.layers] == V1_LAYERS
        assert all(d.size == -1 and d.media_type == DOCKER_LAYER for d in m.layers)
        assert m.config is None
        assert m.blobs == m.layers


@pytest.mark.parametrize("signatures", [1, 2])
def test_schema1_signed_digest_is_of_the_payload(signatures: int) -> None:
    payload = schema1_payload(V1_LAYERS)
    body = sign_schema1(payload, signatures)
    # the body is a valid JSON object whose content is the payload's plus the signatures
    doc = json.loads(body)
    assert len(doc["signatures"]) == signatures
    assert {k: v for k, v in doc.items() if k != "signatures"} == json.loads(payload)

    for hint in (DOCKER_MANIFEST_V1_SIGNED, DOCKER_MANIFEST_V1, "application/json", None):
        m = Manifest.parse(body, hint)
        assert m.media_type == DOCKER_MANIFEST_V1_SIGNED
        assert m.raw == body
        assert m.digest == sha256(payload)
        assert m.digest != sha256(body)
        assert m.digest_with("sha512") == "sha512:" + hashlib.sha512(payload).hexdigest()
        assert m.size == len(body)
        assert [d.digest for d in m.layers] == V1_LAYERS
        assert m.descriptor().digest == sha256(payload)


def test_digest_of_parses_only_a_signed_schema1_manifest() -> None:
    payload = schema1_payload(V1_LAYERS)
    body = sign_schema1(payload)
    assert digest_of(body) == sha256(payload) == Manifest.parse(body).digest
    assert digest_of(body, "sha512") == "sha512:" + hashlib.sha512(payload).hexdigest()
    # told from the content, as Manifest tells it: an escaped key is still the signatures
    escaped = body.replace(b'"signatures"', b'"signature\\u0073"')
    assert escaped != body
    assert digest_of(escaped) == Manifest.parse(escaped).digest == sha256(payload)
    # anything else: the digest of the bytes, whatever they hold
    unsigned = schema1_payload(V1_LAYERS)
    assert digest_of(unsigned) == sha256(unsigned) == Manifest.parse(unsigned).digest
    assert digest_of(b"\x00 not json") == sha256(b"\x00 not json")
    # a signed schema1 manifest whose signature no longer parses: the digest of its bytes
    damaged = body.replace(b'"protected"', b'"protectes"')
    assert damaged != body
    assert digest_of(damaged) == sha256(damaged)


def test_digest_of_parses_no_json_that_cannot_hold_a_signatures_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import regstore.manifest as manifest_module

    sniffed: list[bytes] = []

    def counting(raw: bytes) -> str:
        sniffed.append(raw)
        return media_type_of(raw)

    monkeypatch.setattr(manifest_module, "media_type_of", counting)
    plain = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).encode()
    assert digest_of(plain) == sha256(plain)
    assert sniffed == []
    escaped = b'{"note": "caf\\u00e9"}'
    assert digest_of(escaped) == sha256(escaped)
    assert sniffed == [escaped]  # an escape might spell the key: looked at


def test_schema1_signatures_that_disagree_are_rejected() -> None:
    payload = schema1_payload(V1_LAYERS)
    cut = payload.rindex(b"\n}")
    good = protected_header(cut, payload[cut:])
    # the same cut with another tail: a second signature over a different payload
    other = protected_header(cut, b"\n }")
    assert Manifest.parse(sign_schema1(payload, headers=[good, good])).digest == sha256(payload)
    with pytest.raises(ManifestInvalidError, match="disagree"):
        Manifest.parse(sign_schema1(payload, headers=[good, other]))


@pytest.mark.parametrize(
    "protected",
    [
        "!!!not base64!!!",
        b64url(b"not json"),
        b64url(b"[1, 2]"),
        b64url(json.dumps({"formatTail": "Cn0"}).encode()),  # no formatLength
        b64url(json.dumps({"formatLength": 10}).encode()),  # no formatTail
        protected_header("10", b"\n}"),  # a string length
        protected_header(10.0, b"\n}"),
        protected_header(True, b"\n}"),
        protected_header(-1, b"\n}"),
        protected_header(10**9, b"\n}"),
    ],
)
def test_schema1_bad_protected_headers_fail_at_parse(protected: str) -> None:
    payload = schema1_payload(V1_LAYERS)
    doc = json.loads(sign_schema1(payload))
    doc["signatures"][0]["protected"] = protected
    with pytest.raises(ManifestInvalidError):
        Manifest.parse(json.dumps(doc).encode())


@pytest.mark.parametrize("signatures", [[], {}, "x", [None], [{"header": {}}]])
def test_schema1_malformed_signature_lists_are_rejected(signatures: Any) -> None:
    doc = json.loads(schema1_payload(V1_LAYERS))
    doc["signatures"] = signatures
    with pytest.raises(ManifestInvalidError):
        Manifest.parse(json.dumps(doc).encode())


def test_schema1_duplicate_layers_are_deduplicated() -> None:
    empty = sha256(b"")
    blob_sums = [LAYER_A["digest"], empty, empty, LAYER_B["digest"], empty, LAYER_A["digest"]]
    m = Manifest.parse(sign_schema1(schema1_payload(blob_sums)))
    assert [d.digest for d in m.layers] == [LAYER_A["digest"], empty, LAYER_B["digest"]]


@pytest.mark.parametrize(
    "change",
    [
        {"fsLayers": None},
        {"fsLayers": "x"},
        {"fsLayers": [{"blobSum": "tarsum.v2+sha256:12345"}]},  # the seed's fake digests
        {"fsLayers": [{"blobSum": "sha256:" + "A" * 64}]},
        {"fsLayers": ["sha256:" + "a" * 64]},
        {"history": [{"v1Compatibility": "{}"}]},  # 1 history entry for 2 layers
        {"schemaVersion": True},
        {"schemaVersion": 1.0},
    ],
)
def test_schema1_malformed(change: dict[str, Any]) -> None:
    doc = json.loads(schema1_payload(V1_LAYERS))
    doc.update(change)
    doc = {k: v for k, v in doc.items() if v is not None}
    with pytest.raises(ManifestInvalidError):
        Manifest.parse(json.dumps(doc).encode(), DOCKER_MANIFEST_V1)


# -- exact bytes ---------------------------------------------------------------------------


def test_raw_bytes_are_kept_exactly() -> None:
    raw = (
        b'\n  {  "layers" : [ ],"config":{"size":2,"digest":"' + EMPTY_DIGEST.encode()
        + b'",   "mediaType":"application/vnd.oci.empty.v1+json"},\n\t"schemaVersion":2 ,'
        b'"mediaType":"application/vnd.oci.image.manifest.v1+json"}\r\n  '
    )  # fmt: skip
    m = Manifest.parse(raw)
    assert m.raw == raw
    assert m.size == len(raw)
    assert m.digest == sha256(raw)
    assert list(m.doc) == ["layers", "config", "schemaVersion", "mediaType"]
    # a re-serialisation would have another digest: the view must never be the source
    assert sha256(json.dumps(m.doc).encode()) != m.digest


def test_bytearray_and_memoryview_are_accepted_and_copied() -> None:
    raw = bytearray(encode(docker_v2()))
    m = Manifest.parse(raw)
    raw[0:1] = b" "
    assert isinstance(m.raw, bytes) and m.raw == encode(docker_v2())
    assert Manifest.parse(memoryview(encode(docker_v2()))).raw == encode(docker_v2())


def test_manifest_equality_hash_repr_and_pickle() -> None:
    a = Manifest.parse(encode(docker_v2()))
    b = parse_manifest(encode(docker_v2()), DOCKER_MANIFEST_V2)
    c = Manifest.parse(json.dumps(docker_v2()).encode())  # same content, other bytes
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert a != encode(docker_v2())
    assert repr(a) == f"Manifest({DOCKER_MANIFEST_V2!r}, {a.digest}, {a.size} bytes)"
    assert SignedManifest is Manifest


def test_digest_with_sha512() -> None:
    raw = encode(oci_manifest())
    m = Manifest.parse(raw)
    assert m.digest_with("sha256") == m.digest
    assert m.digest_with("sha512") == "sha512:" + hashlib.sha512(raw).hexdigest()
    with pytest.raises(ValueError):
        m.digest_with("md5")


def test_descriptor_of_a_manifest() -> None:
    raw = encode(oci_index())
    m = Manifest.parse(raw)
    d = m.descriptor(**{"org.opencontainers.image.ref.name": "v1"})
    assert (d.media_type, d.digest, d.size) == (OCI_INDEX, sha256(raw), len(raw))
    assert d.annotations == {"org.opencontainers.image.ref.name": "v1"}
    assert d.is_manifest


def test_blobs_are_listed_once_but_layers_keep_their_order() -> None:
    m = Manifest.parse(encode(docker_v2([LAYER_A, LAYER_B, LAYER_A])))
    assert [d.digest for d in m.layers] == [LAYER_A["digest"], LAYER_B["digest"], LAYER_A["digest"]]
    assert [d.digest for d in m.blobs] == [CONFIG["digest"], LAYER_A["digest"], LAYER_B["digest"]]
    empty = {"mediaType": OCI_EMPTY, "digest": EMPTY_DIGEST, "size": 2}
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/x",
           "config": empty, "layers": [empty]}  # fmt: skip
    assert [d.digest for d in Manifest.parse(encode(doc)).blobs] == [EMPTY_DIGEST]


def test_media_type_constants() -> None:
    assert {
        DOCKER_MANIFEST_V1, DOCKER_MANIFEST_V1_SIGNED, DOCKER_MANIFEST_V2, DOCKER_MANIFEST_LIST,
        OCI_MANIFEST, OCI_INDEX,
    } == MANIFEST_MEDIA_TYPES  # fmt: skip
    assert {OCI_INDEX, DOCKER_MANIFEST_LIST} == INDEX_MEDIA_TYPES
    assert sorted(t.strip() for t in MANIFEST_ACCEPT.split(",")) == sorted(MANIFEST_MEDIA_TYPES)
    assert MANIFEST_MAX_SIZE == 4 * 1024 * 1024


# -- Platform and Descriptor ---------------------------------------------------------------


def test_platform_parse_and_str() -> None:
    assert Platform.parse("linux/amd64") == Platform("linux", "amd64")
    assert Platform.parse("linux/arm64/v8") == Platform("linux", "arm64", "v8")
    assert str(Platform("linux", "arm", "v7")) == "linux/arm/v7"
    assert str(Platform("windows", "amd64", None, "10.0.17763")) == "windows/amd64"


@pytest.mark.parametrize("text", ["", "linux", "linux/", "/amd64", "linux//v7", "a/b/c/d",
                                  "linux/arm/"])  # fmt: skip
def test_platform_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError) as info:
        Platform.parse(text)
    assert isinstance(info.value, RegstoreError)
    assert isinstance(info.value, InvalidReferenceError) and info.value.part == "platform"


def test_platform_matches() -> None:
    arm64v8 = Platform("linux", "arm64", "v8")
    assert arm64v8.matches(Platform("linux", "arm64"))  # no variant wanted: any
    assert arm64v8.matches(Platform("linux", "arm64", "v8"))
    assert not arm64v8.matches(Platform("linux", "arm64", "v9"))
    assert not arm64v8.matches(Platform("windows", "arm64"))
    assert not arm64v8.matches(Platform("linux", "amd64"))


@pytest.mark.parametrize(
    ("have", "wanted", "matches"),
    [
        # as containerd normalizes them: arm64 is v8, arm without a variant v7, aliases
        ("linux/arm64", "linux/arm64/v8", True),
        ("linux/arm", "linux/arm/v7", True),
        ("linux/arm", "linux/arm/v6", False),
        ("linux/arm/v6", "linux/arm", True),  # no variant wanted: any
        ("linux/aarch64", "linux/arm64", True),
        ("linux/x86_64", "linux/amd64", True),
        ("linux/armhf", "linux/arm/v7", True),
        ("Linux/amd64", "linux/amd64", True),
        ("linux/arm/7", "linux/arm/v7", True),
        ("linux/arm64/v9", "linux/arm64/v8", False),
        ("linux/AMD64", "linux/amd64", True),
    ],
)
def test_platform_matches_as_containerd_normalizes(have: str, wanted: str, matches: bool) -> None:
    assert Platform.parse(have).matches(Platform.parse(wanted)) is matches


@pytest.mark.parametrize(
    ("raw", "platform"),
    [
        (b'{"os": "linux", "architecture": "arm", "variant": "v7"}', "linux/arm/v7"),
        (b'{"os": "linux", "architecture": 5}', "linux"),  # no architecture: none to compare
        (b'{"os": {"x": 1}, "architecture": "amd64"}', None),
        (b'{"architecture": "amd64"}', None),
        (b"[1, 2]", None),
        (b"not json", None),
        (b"[" * 100_000 + b"]" * 100_000, None),  # nesting too deep to read: no RecursionError
        (None, None),
    ],
)
def test_platform_from_config_reads_only_what_a_config_says(
    raw: bytes | None, platform: str | None
) -> None:
    found = Platform.from_config(raw)
    assert (str(found) if found is not None else None) == platform


def test_descriptor_round_trip_and_hashable() -> None:
    obj = child(AMD64_RAW, OCI_MANIFEST, "linux", "arm64", "v8")
    obj["platform"]["os.version"] = "10.0"
    obj["annotations"] = {"a": "b"}
    obj["urls"] = ["https://example.com/x"]
    obj["artifactType"] = "application/x"
    d = Descriptor.from_json(obj, "manifests[0]")
    assert d.to_json() == obj
    assert Descriptor.from_json(d.to_json(), "again") == d
    assert d.platform == Platform("linux", "arm64", "v8", "10.0")
    # usable in sets and as keys; equal descriptors hash alike
    twin = Descriptor.from_json(obj, "twin")
    assert len({d, twin}) == 1
    assert pickle.loads(pickle.dumps(d)) == d
    plain = Descriptor(DOCKER_LAYER, Digest(LAYER_A["digest"]), 7)
    assert plain.to_json() == LAYER_A
    assert not plain.is_manifest


# -- rejected ------------------------------------------------------------------------------


def test_oversized_manifest_is_rejected() -> None:
    raw = encode(docker_v2())
    exact = raw + b" " * (MANIFEST_MAX_SIZE - len(raw))
    assert Manifest.parse(exact).size == MANIFEST_MAX_SIZE
    with pytest.raises(ManifestInvalidError, match="limit"):
        Manifest.parse(exact + b" ")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b'{"schemaVersion": 2,}',
        b"{'schemaVersion': 2}",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
        b'{"a": 1} {"b": 2}',
        b"\xef\xbb\xbf" + encode(docker_v2()),  # UTF-8 BOM
        encode(docker_v2()).decode().encode("utf-16"),
        b'{"schemaVersion": 2, "x": "\xff"}',  # not UTF-8
    ],
)
def test_invalid_json_is_rejected(raw: bytes) -> None:
    with pytest.raises(ManifestInvalidError):
        Manifest.parse(raw)


@pytest.mark.parametrize("raw", [b"[]", b'"manifest"', b"1", b"null", b"true", b"[{}]"])
def test_non_objects_are_rejected(raw: bytes) -> None:
    with pytest.raises(ManifestInvalidError, match="object"):
        Manifest.parse(raw)


@pytest.mark.parametrize("value", ["{}", None, 1, ["{}"]])
def test_non_bytes_are_rejected(value: Any) -> None:
    with pytest.raises(ManifestInvalidError):
        Manifest.parse(value)


def with_layer_field(**fields: Any) -> bytes:
    layer = dict(LAYER_B)
    for key, value in fields.items():
        if value is ...:
            layer.pop(key)
        else:
            layer[key] = value
    return encode(docker_v2([LAYER_A, layer]))


@pytest.mark.parametrize(
    "fields",
    [
        {"digest": ...},
        {"digest": None},
        {"digest": "sha256:" + "A" * 64},
        {"digest": "sha256:1234"},
        {"digest": "md5:" + "a" * 32},
        {"digest": "tarsum.v2+sha256:12345"},
        {"digest": 12},
        {"size": ...},
        {"size": -1},
        {"size": True},
        {"size": False},
        {"size": 7.0},
        {"size": 7.5},
        {"size": "7"},
        {"size": None},
        {"size": 2**63},
        {"mediaType": 3},
        {"annotations": []},
        {"annotations": {"a": 1}},
        {"urls": "https://example.com/x"},
        {"urls": [1]},
        {"urls": ""},
        {"annotations": ""},
        {"platform": "linux/amd64"},
        {"platform": {"os": "linux", "architecture": 64}},
    ],
)
def test_bad_descriptors_are_rejected_naming_where(fields: dict[str, Any]) -> None:
    with pytest.raises(ManifestInvalidError, match=r"layers\[1\]"):
        Manifest.parse(with_layer_field(**fields))


def test_huge_but_valid_size_is_accepted() -> None:
    m = Manifest.parse(with_layer_field(size=2**63 - 1))
    assert m.layers[1].size == 2**63 - 1


@pytest.mark.parametrize(
    ("key", "value"),
    [("config", None), ("config", "x"), ("config", {}), ("layers", None), ("layers", {}),
     ("manifests", "x")],
)  # fmt: skip
def test_bad_structure_is_rejected(key: str, value: Any) -> None:
    doc = oci_index() if key == "manifests" else docker_v2()
    if value is None:
        doc.pop(key)
    else:
        doc[key] = value
    with pytest.raises(ManifestInvalidError):
        Manifest.parse(encode(doc))


def test_index_without_manifests_is_rejected() -> None:
    doc = oci_index()
    del doc["manifests"]
    with pytest.raises(ManifestInvalidError, match="manifests"):
        Manifest.parse(encode(doc))


@pytest.mark.parametrize(
    ("body_type", "hint"),
    [
        (OCI_MANIFEST, DOCKER_MANIFEST_V2),
        (DOCKER_MANIFEST_V2, OCI_MANIFEST),
        (OCI_MANIFEST, OCI_INDEX),
        (OCI_INDEX, DOCKER_MANIFEST_LIST),
    ],
)
def test_media_type_conflicting_with_content_type_is_rejected(body_type: str, hint: str) -> None:
    doc = oci_index() if body_type in INDEX_MEDIA_TYPES else oci_manifest()
    doc["mediaType"] = body_type
    with pytest.raises(ManifestInvalidError, match="differs"):
        Manifest.parse(encode(doc), hint)
    # the same body under its own type, or a generic one, is fine
    assert Manifest.parse(encode(doc), body_type).media_type == body_type
    assert Manifest.parse(encode(doc), f"{body_type}; charset=utf-8").media_type == body_type
    assert Manifest.parse(encode(doc), "application/json").media_type == body_type


def test_unknown_media_types_are_rejected() -> None:
    doc = oci_index()
    doc["mediaType"] = "application/vnd.example.unknown+json"
    with pytest.raises(ManifestInvalidError, match="unsupported"):
        Manifest.parse(encode(doc))
    with pytest.raises(ManifestInvalidError, match="unsupported"):
        Manifest.parse(encode(oci_index(media_type=False)), "text/html")
    doc = oci_manifest()
    doc["mediaType"] = 2
    with pytest.raises(ManifestInvalidError, match="mediaType"):
        Manifest.parse(encode(doc))


@pytest.mark.parametrize("version", [None, 3, 0, "2", 2.0, True, [2]])
def test_wrong_schema_version_is_rejected(version: Any) -> None:
    for doc in (docker_v2(), oci_manifest(), oci_index(), docker_list()):
        if version is None:
            del doc["schemaVersion"]
        else:
            doc["schemaVersion"] = version
        with pytest.raises(ManifestInvalidError, match="schemaVersion"):
            Manifest.parse(encode(doc))


def test_schema_version_1_with_a_schema2_body_is_rejected() -> None:
    doc = docker_v2()
    doc["schemaVersion"] = 1
    with pytest.raises(ManifestInvalidError):
        Manifest.parse(encode(doc))


@pytest.mark.parametrize("depth", [100_000, 10_000, 2_000])
def test_deep_nesting_bomb_is_an_invalid_manifest_not_a_crash(depth: int) -> None:
    arrays = b"[" * depth + b"]" * depth
    objects = b'{"a":' * depth + b"1" + b"}" * depth
    inside = encode(oci_manifest()).replace(b'"schemaVersion"', b'"x": ' + arrays + b', "s"', 1)
    for raw in (arrays, objects, inside):
        with pytest.raises(ManifestInvalidError):
            Manifest.parse(raw)


def test_errors_are_value_errors_too() -> None:
    with pytest.raises(ValueError):
        Manifest.parse(b"nope")


def test_schema1_protected_header_nesting_bomb_is_manifest_invalid() -> None:
    # found by the parser fuzzer: a JWS protected header of 100,000 nested arrays raised
    # RecursionError instead of the one error hostile manifests get
    bomb = base64.urlsafe_b64encode(b"[" * 100_000 + b"]" * 100_000).rstrip(b"=").decode()
    doc = {
        "schemaVersion": 1,
        "name": "a",
        "tag": "b",
        "fsLayers": [],
        "signatures": [{"protected": bomb}],
    }
    with pytest.raises(ManifestInvalidError, match="protected header"):
        Manifest.parse(json.dumps(doc).encode(), None)


# -- sniffing alone (a store's read of its own bytes; the facade parses them after) --------


@pytest.mark.parametrize(
    "raw",
    [
        AMD64_RAW,
        ARM64_RAW,
        encode(oci_manifest(media_type=False)),
        encode(docker_list()),
        encode(oci_index()),
        encode(oci_index(media_type=False)),
        encode({"schemaVersion": 1, "name": "a", "tag": "b", "fsLayers": [], "history": []}),
    ],
    ids=["docker", "oci", "oci-unmarked", "list", "index", "index-unmarked", "schema1"],
)
def test_sniffing_alone_names_the_type_a_full_parse_finds(raw: bytes) -> None:
    assert media_type_of(raw) == Manifest.parse(raw).media_type


@pytest.mark.parametrize(
    "raw",
    [b"", b"[]", b"not json", b'{"mediaType": 3}', b"\xff\xfe{}", b'{"a": NaN}',
     b" " * (MANIFEST_MAX_SIZE + 1)],
    ids=["empty", "list", "text", "type-not-a-string", "not-utf8", "nan", "too-big"],
)  # fmt: skip
def test_sniffing_what_is_no_manifest_names_no_type(raw: bytes) -> None:
    assert media_type_of(raw) == ""
    with pytest.raises(ManifestInvalidError):
        Manifest.parse(raw)
