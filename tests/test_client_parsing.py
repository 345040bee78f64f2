"""Unit tests of the client's parsers: challenges, scopes, ranges, links, URLs, errors."""

from __future__ import annotations

import email.utils
import time

import pytest

from regstore.client.bodies import UploadBody, UploadLengthError
from regstore.client.challenge import merge_scopes, parse_www_authenticate, repository_scope
from regstore.client.client import Client, default_user_agent
from regstore.client.errors_map import (
    Operation,
    error_for_status,
    parse_error_body,
    parse_retry_after,
)
from regstore.client.ranges import chunk_content_range, parse_content_range, parse_upload_range
from regstore.client.urls import (
    Endpoint,
    add_query,
    is_loopback_host,
    parse_next_link,
    redact_url,
    resolve,
    same_origin,
)
from regstore.errors import (
    AuthenticationError,
    BlobNotFoundError,
    BlobUploadInvalidRangeError,
    BlobUploadNotFoundError,
    ImageManifestNotFoundError,
    RepositoryNotFoundError,
    UnexpectedHTTPStatusError,
)

# -- WWW-Authenticate ----------------------------------------------------------------------------


def test_bearer_challenge_with_quoted_commas_and_several_scopes() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:samalba/my-app:pull,push repository:other:pull",'
        'error="insufficient_scope"'
    )
    [c] = parse_www_authenticate(header)
    assert c.scheme == "bearer"
    assert c.realm == "https://auth.docker.io/token"
    assert c.service == "registry.docker.io"
    assert c.scopes == ("repository:samalba/my-app:pull,push", "repository:other:pull")
    assert c.params["error"] == "insufficient_scope"


def test_several_challenges_escapes_and_token68() -> None:
    header = r'Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple, x"'
    challenges = parse_www_authenticate(header)
    assert [c.scheme for c in challenges] == ["newauth", "basic"]
    assert challenges[0].params == {"realm": "apps", "type": "1", "title": 'Login to "apps"'}
    assert challenges[1].realm == "simple, x"
    [neg, basic] = parse_www_authenticate("Negotiate abc==, Basic realm=x")
    assert neg.params["token68"] == "abc=="
    assert basic.realm == "x"


@pytest.mark.parametrize("header", [None, "", " , ", " ,, "])
def test_empty_or_garbage_challenges(header: str | None) -> None:
    assert parse_www_authenticate(header) == []


def test_unquoted_realm_with_query() -> None:
    [c] = parse_www_authenticate("Bearer realm=http://x/token?a=b,service=svc")
    assert c.realm == "http://x/token?a=b"
    assert c.service == "svc"


def test_merge_scopes_unions_actions_and_keeps_ports_in_names() -> None:
    merged = merge_scopes(
        [repository_scope("a", "pull")],
        ["repository:a:push", "repository:127.0.0.1:5000/x:pull", "registry:catalog:*"],
    )
    assert merged == (
        "registry:catalog:*",
        "repository:127.0.0.1:5000/x:pull",
        "repository:a:pull,push",
    )


# -- ranges ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size", "total", "ambiguous"),
    [
        ("0-99", 100, None, False),
        ("bytes=0-99", 100, None, False),
        ("bytes=0-99/100", 100, 100, False),
        ("0-0", 1, None, True),
    ],
)
def test_upload_range_dialects(header: str, size: int, total: int | None, ambiguous: bool) -> None:
    rng = parse_upload_range(header)
    assert rng is not None
    assert (rng.size, rng.last, rng.total, rng.ambiguous) == (size, size - 1, total, ambiguous)


@pytest.mark.parametrize("header", [None, "", "5-10", "abc", "0-", "1-5/6"])
def test_upload_range_rejects_malformed(header: str | None) -> None:
    assert parse_upload_range(header) is None


def test_content_range() -> None:
    assert parse_content_range("bytes 10-19/100") == (10, 19, 100)
    assert parse_content_range("bytes 10-19/*") == (10, 19, None)
    assert parse_content_range("bytes */100") == (None, None, 100)
    assert parse_content_range("bytes 19-10/100") is None
    assert parse_content_range("10-19/100") is None


def test_chunk_content_range_is_inclusive() -> None:
    assert chunk_content_range(0, 10) == "0-9"
    assert chunk_content_range(10, 1) == "10-10"
    with pytest.raises(ValueError):
        chunk_content_range(0, 0)


# -- Link and URLs -------------------------------------------------------------------------------


def test_link_next_relative_and_absolute() -> None:
    base = "http://127.0.0.1:5000/v2/_catalog?n=1"
    assert (
        parse_next_link('</v2/_catalog?last=probe%2Fone&n=1>; rel="next"', base)
        == "http://127.0.0.1:5000/v2/_catalog?last=probe%2Fone&n=1"
    )
    assert (
        parse_next_link("<https://other/v2/x/tags/list?last=b>; rel=next", base)
        == "https://other/v2/x/tags/list?last=b"
    )
    header = '<http://a/prev>; rel="prev", </v2/n?last=c>; title="x"; rel="next"'
    assert parse_next_link(header, base) == "http://127.0.0.1:5000/v2/n?last=c"
    assert parse_next_link('<http://a/prev>; rel="prev"', base) is None
    assert parse_next_link(None, base) is None


@pytest.mark.parametrize(
    ("text", "plain", "url", "registry"),
    [
        ("127.0.0.1:5000", None, "http://127.0.0.1:5000", "127.0.0.1:5000"),
        ("localhost:5000", None, "http://localhost:5000", "localhost:5000"),
        ("[::1]:5000", None, "http://[::1]:5000", "[::1]:5000"),
        ("127.9.9.9", None, "http://127.9.9.9", "127.9.9.9"),
        ("ghcr.io", None, "https://ghcr.io", "ghcr.io"),
        ("https://ghcr.io/", None, "https://ghcr.io", "ghcr.io"),
        ("myreg:5000", True, "http://myreg:5000", "myreg:5000"),
        ("127.0.0.1:5000", False, "https://127.0.0.1:5000", "127.0.0.1:5000"),
        ("docker.io", None, "https://registry-1.docker.io", "docker.io"),
        ("index.docker.io", None, "https://registry-1.docker.io", "docker.io"),
    ],
)
def test_endpoint_parse(text: str, plain: bool | None, url: str, registry: str) -> None:
    endpoint = Endpoint.parse(text, plain_http=plain)
    assert endpoint.base_url == url
    assert endpoint.registry == registry


@pytest.mark.parametrize(
    "text", ["", "https://u:p@host", "ftp://host", "host/path", "https://host/v3/x"]
)
def test_endpoint_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        Endpoint.parse(text)
    with pytest.raises(ValueError):
        Endpoint.parse("http://host", plain_http=False)


def test_loopback_detection() -> None:
    assert is_loopback_host("127.0.0.1:5000") and is_loopback_host("localhost")
    assert is_loopback_host("[::1]:80") and is_loopback_host("::1")
    assert not is_loopback_host("10.0.0.1:5000") and not is_loopback_host("example.com")


def test_redact_url_hides_secrets_but_keeps_api_parameters() -> None:
    url = (
        "https://user:pw@s3.example/bucket/blob?X-Amz-Signature=abc&X-Amz-Credential=k"
        "&digest=sha256:1&_state=zzz&n=5"
    )
    red = redact_url(url)
    assert "pw" not in red and "abc" not in red and "zzz" not in red and "k&" not in red
    assert "digest=sha256:1" in red and "n=5" in red and red.startswith("https://s3.example/")


def test_resolve_and_add_query_keep_state() -> None:
    loc = resolve("http://h:5000/v2/a/blobs/uploads/", "/v2/a/blobs/uploads/u?_state=x%3D")
    assert loc == "http://h:5000/v2/a/blobs/uploads/u?_state=x%3D"
    assert add_query(loc, digest="sha256:ab") == loc + "&digest=sha256%3Aab"
    assert add_query("http://h/u", digest="d") == "http://h/u?digest=d"
    assert same_origin("http://h:80/a", "http://h/b")
    assert not same_origin("http://h/a", "https://h/a")
    assert not same_origin("http://h:5000/a", "http://h:5001/a")


# -- error bodies and mapping ---------------------------------------------------------------------


def test_parse_error_body_variants() -> None:
    body = b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown","detail":"sha256:x"}]}'
    [detail] = parse_error_body(body)
    assert (detail.code, detail.message, detail.detail) == (
        "BLOB_UNKNOWN",
        "blob unknown",
        "sha256:x",
    )
    assert parse_error_body(b"404 page not found\n") == ()
    assert parse_error_body(b"") == ()
    assert parse_error_body(b"{not json") == ()
    assert parse_error_body(b'{"errors": "nope"}') == ()


def test_retry_after_seconds_and_date() -> None:
    assert parse_retry_after("7") == 7.0
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= (parse_retry_after(date, now=now) or 0) <= 31
    assert parse_retry_after("garbage") is None
    assert parse_retry_after(None) is None


def _op(kind: str, **kw: str) -> Operation:
    return Operation(kind, f"doing {kind}", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "status", "body", "expected"),
    [
        ("blob", 404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}', BlobNotFoundError),
        ("blob", 404, b"", BlobNotFoundError),
        ("manifest", 404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', ImageManifestNotFoundError),
        ("manifest", 404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}', RepositoryNotFoundError),
        ("manifest", 404, b"404 page not found", ImageManifestNotFoundError),
        ("tags", 404, b"", RepositoryNotFoundError),
        ("upload", 404, b"", BlobUploadNotFoundError),
        ("upload", 416, b"", BlobUploadInvalidRangeError),
        ("manifest", 401, b"", AuthenticationError),
        ("manifest", 400, b'{"errors":[{"code":"MANIFEST_INVALID"}]}', UnexpectedHTTPStatusError),
        ("catalog", 404, b"", UnexpectedHTTPStatusError),
        ("blob", 500, b"{}", UnexpectedHTTPStatusError),
    ],
)
def test_error_mapping(kind: str, status: int, body: bytes, expected: type[Exception]) -> None:
    op = _op(
        kind, name="a/b", reference="sha256:" + "0" * 64, location="http://h/v2/a/b/blobs/uploads/u"
    )
    url = "http://h/v2/a/b/x?_state=secret"
    err = error_for_status(op, "GET", url, status, {"Retry-After": "3"}, body)
    assert type(err) is expected
    assert err.http is not None and err.http.status == status
    assert "secret" not in err.http.url and err.http.retry_after == 3.0


def test_unexpected_status_message_says_what_was_done() -> None:
    op = Operation("manifest", "fetching manifest library/alpine:3.19 from 127.0.0.1:5000")
    body = b'{"errors":[{"code":"UNSUPPORTED","message":"nope"}]}'
    err = error_for_status(op, "DELETE", "http://127.0.0.1:5000/v2/x", 405, {}, body)
    text = str(err)
    assert "fetching manifest library/alpine:3.19 from 127.0.0.1:5000" in text
    assert "405" in text and "UNSUPPORTED" in text


# -- bodies, client construction ----------------------------------------------------------------


def test_upload_body_lengths(tmp_path: object) -> None:
    assert b"".join(UploadBody(b"abcdef", 6, chunk_size=4)) == b"abcdef"
    with pytest.raises(UploadLengthError):
        UploadBody(b"abc", 4)
    with pytest.raises(UploadLengthError):
        list(UploadBody(iter([b"ab", b"cd"]), 3))
    with pytest.raises(UploadLengthError):
        list(UploadBody(iter([b"ab"]), 3))
    import io

    src = io.BytesIO(b"0123456789")
    src.seek(2)
    body = UploadBody(src, 5, chunk_size=2)
    assert b"".join(body) == b"23456" and body.replayable
    assert body.rewind() and b"".join(body) == b"23456"
    assert not UploadBody(iter([b"x"]), 1).replayable


def test_client_repr_hides_password_and_user_agent() -> None:
    c = Client("127.0.0.1:5000", username="alice", password="s3cr3t-pw")
    assert "s3cr3t-pw" not in repr(c) and "alice" in repr(c)
    assert repr(c) == "Client('http://127.0.0.1:5000', username='alice')"
    assert (
        default_user_agent().startswith("regstore/") and "python-requests/" in default_user_agent()
    )
    with pytest.raises(ValueError):
        Client("127.0.0.1:5000", username="alice")
    with pytest.raises(ValueError):
        Client("127.0.0.1:5000", max_in_flight=0)


def test_the_user_agent_names_the_versions_importlib_metadata_names() -> None:
    from importlib.metadata import version

    assert default_user_agent() == (
        f"regstore/{version('regstore')} python-requests/{version('requests')}"
    )
