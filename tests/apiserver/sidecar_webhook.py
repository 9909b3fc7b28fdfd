"""Another mutating webhook, as a sidecar injector or a mesh would be one: it adds a container
and an environment variable to every container of every pod it is sent. Loopback HTTPS with a
certificate from its own CA (trustme); it counts the reviews it answered.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import trustme

SIDECAR = {"name": "log-shipper", "image": "fluent/fluent-bit:3.0", "resources": {"limits": {"memory": "64Mi"}}}
VARIABLE = {"name": "LOG_SHIPPER_ENDPOINT", "value": "http://127.0.0.1:2020"}


def patch_for(pod: dict[str, Any]) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    for index, container in enumerate(pod["spec"]["containers"]):
        if "env" in container:
            ops.append({"op": "add", "path": f"/spec/containers/{index}/env/-", "value": VARIABLE})
        else:
            ops.append({"op": "add", "path": f"/spec/containers/{index}/env", "value": [VARIABLE]})
    ops.append({"op": "add", "path": "/spec/containers/-", "value": SIDECAR})
    return ops


class SidecarWebhook:
    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.reviews = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(context)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}/mutate"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def ca_bundle(self) -> str:
        return base64.b64encode(self.ca.cert_pem.bytes()).decode()

    def __enter__(self) -> SidecarWebhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                request = review["request"]
                patch = base64.b64encode(json.dumps(patch_for(request["object"])).encode()).decode()
                webhook.reviews += 1
                body = json.dumps({
                    "apiVersion": review["apiVersion"], "kind": "AdmissionReview",
                    "response": {"uid": request["uid"], "allowed": True, "patchType": "JSONPatch", "patch": patch},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
