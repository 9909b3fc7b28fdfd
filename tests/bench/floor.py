"""The floor: a raw ASGI app on the same uvicorn/uvloop/httptools/TLS set-up as plane-guard.

It is the least a correct webhook does: read the body, parse the AdmissionReview, and allow the
request under the request's own uid (the API server rejects a response with another uid). The
gap between it and /mutate is the cost of plane-guard's own work (validate, decide, patch,
serialise, log, metrics).
"""

from __future__ import annotations

import argparse
import json

import uvicorn

HEADERS = [(b"content-type", b"application/json")]


def review_response(body: bytes) -> tuple[int, bytes]:
    """(status, body): the allowing AdmissionReview for ``body``, or 400 when it is not one."""
    try:
        review = json.loads(body)
        uid = review["request"]["uid"]
    except (ValueError, KeyError, TypeError):
        return 400, b'{"error":"expected an AdmissionReview with request.uid"}'
    response = {
        "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": True},
    }
    return 200, json.dumps(response, separators=(",", ":")).encode()


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    status, body = review_response(b"".join(chunks))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*HEADERS, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert-file", required=True)
    parser.add_argument("--key-file", required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        ssl_certfile=args.cert_file,
        ssl_keyfile=args.key_file,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
    )


if __name__ == "__main__":
    main()
