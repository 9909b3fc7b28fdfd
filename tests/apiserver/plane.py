"""Pods and Deployments shaped like the ones Plane's Helm charts (plane-ce, plane-enterprise) create.

These are what a user submits (before the API server's defaulting), not what a webhook sees:
the tests let the real API server add the defaults and the ServiceAccount token.
"""

from __future__ import annotations

import copy
from typing import Any

SERVICE_ACCOUNT = "plane-srv-account"

#: chart -> (image, {role: command})
CHARTS: dict[str, tuple[str, dict[str, list[str]]]] = {
    "ce": (
        "artifacts.plane.so/makeplane/plane-backend:v1.4.1",
        {
            "api": ["./bin/docker-entrypoint-api.sh"],
            "worker": ["./bin/docker-entrypoint-worker.sh"],
            "beat": ["./bin/docker-entrypoint-beat.sh"],
        },
    ),
    "ee": (
        "makeplane/backend-commercial:v3.1.2",
        {
            # plane-enterprise starts api and worker through bash (`set -e`, then exec).
            "api": ["/bin/bash", "-c", "set -e\n\n# API server\nexec ./bin/docker-entrypoint-api-ee.sh\n"],
            "worker": ["/bin/bash", "-c", "set -e\n\n# Celery worker\nexec ./bin/docker-entrypoint-worker.sh\n"],
            "beat": ["./bin/docker-entrypoint-beat.sh"],
        },
    ),
}
CONTAINER = {"api": "plane-api", "worker": "plane-worker", "beat": "plane-beat-worker"}
PLANE_SHAPES = [(chart, role) for chart in CHARTS for role in ("api", "worker", "beat")]


def _secrets(chart: str) -> list[dict[str, Any]]:
    names = ["plane-app-secrets", "plane-doc-store-secrets"]
    if chart == "ee":
        names += ["plane-opensearch-secrets", "plane-silo-secrets"]
    return [{"configMapRef": {"name": "plane-app-vars", "optional": False}}] + [
        {"secretRef": {"name": name, "optional": False}} for name in names
    ]


def _template(labels: dict[str, str], containers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"labels": labels, "annotations": {"timestamp": "2026-11-27 02:53:48 +0000 UTC"}},
        "spec": {"serviceAccountName": SERVICE_ACCOUNT, "containers": containers},
    }


def plane_template(chart: str, role: str) -> dict[str, Any]:
    """The pod template of a Plane backend workload (api, worker or beat)."""
    image, commands = CHARTS[chart]
    container: dict[str, Any] = {
        "name": CONTAINER[role],
        "image": image,
        "imagePullPolicy": "Always",
        "command": commands[role],
        "stdin": True,
        "tty": True,
        "envFrom": _secrets(chart),
        "resources": {"requests": {"cpu": "50m", "memory": "50Mi"}, "limits": {"cpu": "500m", "memory": "1000Mi"}},
    }
    if role == "api":
        container["readinessProbe"] = {
            "httpGet": {"path": "/", "port": 8000, "scheme": "HTTP"},
            "failureThreshold": 30, "periodSeconds": 10, "successThreshold": 1, "timeoutSeconds": 1,
        }
    labels = {"app.name": f"plane-{CONTAINER[role]}", "app.kubernetes.io/name": f"plane-{chart}", "app.kubernetes.io/instance": "plane"}
    return _template(labels, [container])


def web_template() -> dict[str, Any]:
    """Plane's web frontend: a Plane image, but not the backend; plane-guard must not touch it."""
    container = {
        "name": "plane-web",
        "image": "makeplane/web-commercial:v3.1.2",
        "imagePullPolicy": "Always",
        "resources": {"requests": {"cpu": "50m", "memory": "50Mi"}, "limits": {"cpu": "500m", "memory": "1000Mi"}},
    }
    return _template({"app.name": "plane-plane-web", "app.kubernetes.io/instance": "plane"}, [container])


def pod(template: dict[str, Any], name: str, namespace: str | None = None) -> dict[str, Any]:
    body = {"apiVersion": "v1", "kind": "Pod", **copy.deepcopy(template)}
    body["metadata"]["name"] = name
    if namespace:
        body["metadata"]["namespace"] = namespace
    return body


def deployment(template: dict[str, Any], name: str, replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/instance": "plane"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.name": template["metadata"]["labels"]["app.name"]}},
            "template": copy.deepcopy(template),
        },
    }


def service_account() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SERVICE_ACCOUNT}}
