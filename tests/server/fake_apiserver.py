"""A small HTTP server that behaves like kube-apiserver for the endpoints ``certs bootstrap`` uses.

It stores objects, bumps resourceVersion, answers 404/409 with Status objects, and applies the
patch types the kubernetes client sends (JSON patch, merge patch, strategic merge patch) the way
the API server does for these kinds. Every request is recorded so tests can check the order of
writes. Loopback only.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonpatch

ROUTES = [
    (re.compile(r"^/api/v1/namespaces/([^/]+)/secrets(?:/([^/]+))?$"), "v1", "Secret"),
    (
        re.compile(r"^/apis/admissionregistration\.k8s\.io/v1/mutatingwebhookconfigurations(?:/([^/]+))?$"),
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
    ),
    (
        re.compile(r"^/apis/admissionregistration\.k8s\.io/v1/validatingwebhookconfigurations(?:/([^/]+))?$"),
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
    ),
]
#: Strategic merge keys of the lists these kinds have.
MERGE_KEYS = {"webhooks": "name"}


def merge_patch(target: Any, patch: Any, merge_keys: dict[str, str] | None = None) -> Any:
    """RFC 7386; with ``merge_keys``, the strategic variant: those lists merge item by item."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif merge_keys and key in merge_keys and isinstance(value, list) and isinstance(result.get(key), list):
            items = result[key]
            for item in value:
                same = (i for i, old in enumerate(items) if old.get(merge_keys[key]) == item.get(merge_keys[key]))
                match = next(same, None)
                if match is None:
                    items.append(copy.deepcopy(item))
                else:
                    items[match] = merge_patch(items[match], item, merge_keys)
        else:
            result[key] = merge_patch(result.get(key), value, merge_keys)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Merge patch, except lists with a merge key are merged item by item."""
    return merge_patch(target, patch, MERGE_KEYS)


class FakeApiServer:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (kind, namespace, name)
        self.requests: list[tuple[str, str, str]] = []  # (method, path, content type)
        self._version = 100
        self._lock = threading.Lock()
        handler = self._handler()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeApiServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def put(self, obj: dict[str, Any]) -> None:
        """Seed an object, as ``kubectl apply`` of the manifests would have."""
        metadata = obj["metadata"]
        with self._lock:
            self._version += 1
            metadata["resourceVersion"] = str(self._version)
            self.objects[(obj["kind"], metadata.get("namespace", ""), metadata["name"])] = copy.deepcopy(obj)

    def get(self, kind: str, name: str, namespace: str = "") -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get((kind, namespace, name)))

    def writes(self) -> list[tuple[str, str, str]]:
        return [r for r in self.requests if r[0] in ("POST", "PUT", "PATCH", "DELETE")]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code})

            def _route(self) -> tuple[str, str, str, str | None] | None:
                path = self.path.split("?", 1)[0]
                for pattern, api_version, kind in ROUTES:
                    match = pattern.match(path)
                    if match:
                        groups = match.groups()
                        namespace, name = (groups[0], groups[1]) if kind == "Secret" else ("", groups[0])
                        return api_version, kind, namespace, name
                return None

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"null")

            def _handle(self) -> None:
                content_type = (self.headers.get("Content-Type") or "").split(";")[0]
                server.requests.append((self.command, self.path.split("?", 1)[0], content_type))
                route = self._route()
                if route is None:
                    self._status(404, "NotFound", f"no route {self.path}")
                    return
                api_version, kind, namespace, name = route
                body = self._body() if self.command in ("POST", "PUT", "PATCH") else None
                with server._lock:
                    key = (kind, namespace, name or "")
                    current = server.objects.get(key)
                    if self.command == "GET":
                        if current is None:
                            self._status(404, "NotFound", f'{kind.lower()}s "{name}" not found')
                        else:
                            self._send(200, current)
                        return
                    if self.command == "POST":
                        name = body["metadata"]["name"]
                        key = (kind, namespace, name)
                        if key in server.objects:
                            self._status(409, "AlreadyExists", f'{kind.lower()}s "{name}" already exists')
                            return
                        updated = body
                    elif current is None:
                        self._status(404, "NotFound", f'{kind.lower()}s "{name}" not found')
                        return
                    elif self.command == "PUT":
                        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                            self._status(409, "Conflict", "the object has been modified")
                            return
                        updated = body
                    elif content_type == "application/json-patch+json":
                        try:
                            updated = jsonpatch.apply_patch(current, body)
                        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                            self._status(422, "Invalid", f"the patch could not be applied: {exc}")
                            return
                    elif content_type == "application/merge-patch+json":
                        updated = merge_patch(current, body)
                    elif content_type == "application/strategic-merge-patch+json":
                        updated = strategic_merge_patch(current, body)
                    else:
                        self._status(415, "UnsupportedMediaType", f"unsupported patch type {content_type}")
                        return
                    updated = copy.deepcopy(updated)
                    updated.setdefault("apiVersion", api_version)
                    updated.setdefault("kind", kind)
                    if namespace:
                        updated["metadata"]["namespace"] = namespace
                    server._version += 1
                    updated["metadata"]["resourceVersion"] = str(server._version)
                    server.objects[key] = updated
                    self._send(201 if self.command == "POST" else 200, updated)

            do_GET = do_POST = do_PUT = do_PATCH = _handle

        return Handler

    def kubeconfig(self) -> str:
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                "users": [{"name": "fake", "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "current-context": "fake",
            }
        )
