"""The floor: a raw ASGI app on the same uvicorn/uvloop/httptools/TLS set-up as plane-guard.

It reads the body and answers a fixed AdmissionReview, so the gap between it and /mutate is
the cost of plane-guard's own work (parse, decide, serialise, log, metrics).
"""

from __future__ import annotations

import argparse

import uvicorn

RESPONSE = (
    b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",'
    b'"response":{"uid":"705ab4f5-6393-11e8-b7cc-42010a800002","allowed":true}}'
)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(RESPONSE)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": RESPONSE})


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
