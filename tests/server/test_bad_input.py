"""Malformed and hostile requests: a clear 4xx each, never a 500, and the server stays healthy."""

from __future__ import annotations

import json
import socket
import ssl

import pytest

from tests.server.harness import SNI, WebhookProcess
from tests.server.pods import plane_pod, review

LIMIT = 65536


@pytest.fixture(scope="module")
def small_limit_server(tmp_path_factory, cert_dir):
    server = WebhookProcess(cert_dir, tmp_path_factory.mktemp("limits") / "server.log", "--max-body-bytes", str(LIMIT)).start()
    yield server
    server.stop()


def exchange(server: WebhookProcess, raw: bytes) -> tuple[int, bytes]:
    """Send raw bytes on a fresh TLS connection; return the status and body of the answer."""
    context = ssl.create_default_context(cafile=str(server.ca_file))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as plain:
        with context.wrap_socket(plain, server_hostname=SNI) as sock:
            sock.sendall(raw)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
    status = int(head.split(b" ", 2)[1])
    return status, body


def http(method: str, path: str, body: bytes = b"", content_type: str | None = "application/json", extra: str = "", length: bool = True) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {SNI}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    if length:
        head += f"Content-Length: {len(body)}\r\n"
    return (head + extra + "\r\n").encode() + body


def chunked(path: str, body: bytes, size: int = 8192) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size)]
    head = f"POST {path} HTTP/1.1\r\nHost: {SNI}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head.encode() + b"".join(parts) + b"0\r\n\r\n"


def envelope(**changes) -> bytes:
    data = review(plane_pod())
    for dotted, value in changes.items():
        target = data
        *parents, last = dotted.split("__")
        for key in parents:
            target = target[key]
        if value is ...:
            del target[last]
        else:
            target[last] = value
    return json.dumps(data).encode()


def nested(depth: int) -> bytes:
    data = json.loads(envelope())
    raw = json.dumps(data)
    return raw.replace('"status": {}', '"status": ' + "[" * depth + "]" * depth).encode()


SECRET = "hunter2-do-not-echo"

CASES = [
    # (id, raw request, expected status, expected words in the message or None)
    ("get-mutate", http("GET", "/mutate", content_type=None, length=False), 405, "use POST"),
    ("put-validate", http("PUT", "/validate", envelope()), 405, "use POST"),
    ("delete-audit", http("DELETE", "/mutate/audit", content_type=None, length=False), 405, "use POST"),
    ("no-content-type", http("POST", "/mutate", envelope(), content_type=None), 415, "application/json"),
    ("text-plain", http("POST", "/mutate", envelope(), content_type="text/plain"), 415, "application/json"),
    ("form", http("POST", "/validate", b"a=b", content_type="application/x-www-form-urlencoded"), 415, "application/json"),
    ("yaml", http("POST", "/mutate", b"kind: AdmissionReview", content_type="application/yaml"), 415, "application/json"),
    ("empty-body", http("POST", "/mutate", b""), 400, "empty body"),
    ("truncated-json", http("POST", "/mutate", envelope()[:-7]), 400, "not valid JSON"),
    ("not-json", http("POST", "/mutate", b"<xml/>"), 400, "not valid JSON"),
    ("invalid-utf8", http("POST", "/mutate", b'{"kind": "\xff\xfe"}'), 400, "not valid JSON"),
    ("json-array", http("POST", "/mutate", b"[]"), 400, "not an AdmissionReview"),
    ("json-string", http("POST", "/validate", b'"AdmissionReview"'), 400, "not an AdmissionReview"),
    ("wrong-kind", http("POST", "/mutate", envelope(kind="Pod")), 400, "kind"),
    ("wrong-api-version", http("POST", "/mutate", envelope(apiVersion="admission.k8s.io/v2")), 400, "must be one of admission.k8s.io/v1"),
    ("no-request", http("POST", "/mutate", envelope(request=...)), 400, "request: Field required"),
    ("no-uid", http("POST", "/mutate", envelope(request__uid=...)), 400, "request.uid"),
    ("empty-uid", http("POST", "/mutate", envelope(request__uid="")), 400, "request.uid"),
    ("uid-object", http("POST", "/mutate", envelope(request__uid={"x": SECRET})), 400, "request.uid"),
    ("object-is-list", http("POST", "/mutate", envelope(request__object=[SECRET])), 400, "request.object"),
    ("object-missing-on-create", http("POST", "/validate", envelope(request__object=None)), 400, "request.object is required"),
    ("no-operation", http("POST", "/mutate", envelope(request__operation=...)), 400, "request.operation"),
    ("kind-not-object", http("POST", "/mutate", envelope(request__kind="Pod")), 400, "request.kind"),
    ("deeply-nested", http("POST", "/mutate", nested(5000)), 400, "not valid JSON"),
    ("declared-too-large", http("POST", "/mutate", b"{}", length=False, extra=f"Content-Length: {LIMIT + 1}\r\n"), 413, "larger than 65536"),
    ("streamed-too-large", chunked("/mutate", b" " * (LIMIT + 10)), 413, "larger than 65536"),
    ("bad-content-length", http("POST", "/mutate", b"{}", length=False, extra="Content-Length: abc\r\n"), 400, None),
    ("unknown-path", http("POST", "/mutatex", envelope()), 404, None),
    ("unknown-get", http("GET", "/admin", content_type=None, length=False), 404, None),
    ("post-healthz", http("POST", "/healthz", b"{}"), 405, None),
]


@pytest.mark.parametrize("raw, status, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request(small_limit_server, raw, status, words):
    got, body = exchange(small_limit_server, raw)
    assert got == status, body[:300]
    if words is not None:
        message = json.loads(body)["message"]
        assert words in message
        assert SECRET not in message


def test_still_healthy_after_the_table(small_limit_server):
    for _, raw, _, _ in CASES:
        exchange(small_limit_server, raw)
    assert small_limit_server.process.poll() is None
    client = small_limit_server.client()
    try:
        assert client.get("/healthz")[0] == 200
        assert client.get("/readyz")[0] == 200
        request = review(plane_pod())
        assert client.review("/mutate", request)["response"]["uid"] == request["request"]["uid"]
    finally:
        client.close()
    assert " 500 " not in small_limit_server.log() and '"status":500' not in small_limit_server.log()
    assert SECRET not in small_limit_server.log()


def test_body_just_under_the_limit_is_read(small_limit_server):
    """The limit is about size, not about a normal pod: a padded but valid review still passes."""
    data = review(plane_pod())
    data["request"]["object"]["metadata"]["annotations"]["pad"] = "x" * (LIMIT - 6000)
    raw = json.dumps(data).encode()
    assert len(raw) < LIMIT
    status, body = exchange(small_limit_server, chunked("/mutate", raw, 1000))
    assert status == 200 and json.loads(body)["response"]["allowed"] is True
