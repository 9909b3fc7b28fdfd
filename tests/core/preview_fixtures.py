"""Inputs for the preview tests, written to look like what ``helm template`` prints for Plane's
charts: ``---`` then a ``# Source:`` comment per document, indentless ``containers:`` lists next to
indented ``command:`` lists, a ``bash -c`` block scalar, blank lines inside a pod spec, an empty
template. Small and hand-written. Fuller mirrors of Plane's chart renders, also hand-written, are
in ``tests/fixtures/charts`` (each file's header names the chart and version it mirrors)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from webhook.core.mutation import mutate_pod
from webhook.core.policy import default_policy
from webhook.ops.preview import TEMPLATE_PATHS

ROOT = Path(__file__).resolve().parents[2]
#: Hand-written mirrors of ``helm template`` of Plane's charts, kept with the tests (never read from
#: outside the repository: a fresh clone has nothing beside it).
CHART_RENDERS = ROOT / "tests" / "fixtures" / "charts"
CHART_RENDER_NAMES = ["plane-ce-shaped.yaml", "plane-enterprise-shaped.yaml", "plane-enterprise-full-shaped.yaml"]
CHART = "plane-enterprise"
IMAGE = "artifacts.plane.so/makeplane/backend-commercial:v2.6.3"
#: Where the ServiceAccount admission plugin mounts the API token.
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


def preview(*args: str, stdin: str | bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``plane-guard preview`` in its own process, as a user runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "webhook.cli", "preview", *args],
        input=stdin.encode() if isinstance(stdin, str) else stdin,
        capture_output=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )
    result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _metadata(name: str, namespace: str | None, indent: str = "  ") -> str:
    lines = [f"{indent}namespace: {namespace}"] if namespace else []
    return "\n".join([*lines, f"{indent}name: {name}", f"{indent}labels:", f"{indent}  app.kubernetes.io/managed-by: Helm"])


def _deployment(component: str, namespace: str | None, command: str, extra: str = "") -> str:
    ns = f"\n      namespace: {namespace}" if namespace else ""
    return f"""apiVersion: apps/v1
kind: Deployment
metadata:
{_metadata(f"plane-{component}-wl", namespace)}
spec:
  replicas: 1
  selector:
    matchLabels:
      app.name: plane-plane-{component}
  template:
    metadata:{ns}
      labels:
        app.name: plane-plane-{component}
      annotations:
        timestamp: "2026-01-01 00:00:00.000000001 +0000 UTC"
    spec:
      containers:
      - name: plane-{component}
        imagePullPolicy: Always
        image: {IMAGE}
{command}
        envFrom:
          - configMapRef:
              name: plane-app-vars
              optional: false
          - secretRef:
              name: plane-app-secrets
              optional: false
{extra}
      serviceAccount: plane-srv-account
      serviceAccountName: plane-srv-account
"""


def helm_documents(namespace: str | None = "plane") -> list[tuple[str, str]]:
    """(``# Source:`` path, document text) in the order helm prints them."""
    api_command = """        command:
          - /bin/bash
          - -c
          - |
            set -e

            # Start the API
            exec ./bin/docker-entrypoint-api-ee.sh"""
    worker_command = """        command:
          - ./bin/docker-entrypoint-worker.sh
        env:
          - name: CELERY_BROKER_POOL_LIMIT   # tuned by hand
            value: "1"
          - name: TZ
            value: UTC"""
    migrator = f"""apiVersion: batch/v1
kind: Job
metadata:
{_metadata("plane-api-migrate", namespace)}
spec:
  backoffLimit: 3
  template:
    spec:
      restartPolicy: OnFailure
      containers:
      - name: plane-api-migrate
        image: {IMAGE}
        command:
          - ./bin/docker-entrypoint-migrator.sh
"""
    config = f"""apiVersion: v1
kind: ConfigMap
metadata:
{_metadata("plane-app-vars", namespace)}
data:
  GUNICORN_MAX_REQUESTS: "1000"
  CELERY_TASK_PUBLISH_RETRY: "1"
"""
    service = f"""apiVersion: v1
kind: Service
metadata:
{_metadata("plane-api", namespace)}
spec:
  clusterIP: None
  ports:
  - name: api-8000
    port: 8000
  selector:
    app.name: plane-plane-api
"""
    return [
        (f"{CHART}/templates/config-secrets/app-env.yaml", config),
        (f"{CHART}/templates/workloads/api.deployment.yaml", service),
        (f"{CHART}/templates/workloads/api.deployment.yaml", _deployment("api", namespace, api_command)),
        (f"{CHART}/templates/workloads/worker.deployment.yaml", _deployment("worker", namespace, worker_command)),
        (f"{CHART}/templates/workloads/beat-worker.deployment.yaml", _deployment("beat-worker", namespace, "        command:\n          - ./bin/docker-entrypoint-beat.sh")),
        (f"{CHART}/templates/workloads/api-migrate.job.yaml", migrator),
    ]


def helm_render(namespace: str | None = "plane") -> str:
    """What ``helm template plane <chart> -n plane`` prints (one stream)."""
    return "".join(f"---\n# Source: {source}\n{text}" for source, text in helm_documents(namespace))


def write_output_dir(out: Path) -> list[Path]:
    """What ``helm template plane <chart> --output-dir out`` writes: nested folders, one file per
    template (several documents when a template renders several), a subchart under ``charts/``."""
    files: dict[Path, str] = {}
    for source, text in helm_documents():
        path = out / source
        files[path] = files.get(path, "") + f"---\n# Source: {source}\n{text}"
    redis = f"{CHART}/charts/redis/templates/statefulset.yaml"
    files[out / redis] = f"""---
# Source: {redis}
apiVersion: apps/v1
kind: StatefulSet
metadata:
  namespace: plane
  name: plane-redis-wl
spec:
  serviceName: plane-redis
  selector:
    matchLabels:
      app.name: plane-plane-redis
  template:
    metadata:
      labels:
        app.name: plane-plane-redis
    spec:
      containers:
      - name: plane-redis
        image: valkey/valkey:7.2.5-alpine
"""
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return sorted(files, key=lambda p: p.relative_to(out).parts)


def pod_of(document: dict[str, Any]) -> Any:
    """The pod (template) of a workload, as the webhook would see it."""
    node: Any = document
    for part in TEMPLATE_PATHS[document["kind"]].split("/")[1:]:
        node = node[part]
    return node


def with_token(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod after Kubernetes' ServiceAccount admission plugin (automount on), written here on its own
    so that preview's version is checked against it: a projected ``kube-api-access-<random>`` volume and,
    in every container with nothing at the token path, a read-only mount of it."""
    pod = copy.deepcopy(pod)
    spec = pod["spec"]
    if spec.get("automountServiceAccountToken") is False:
        return pod
    if any(volume["name"].startswith("kube-api-access-") for volume in spec.get("volumes", [])):
        return pod
    for container in spec.get("initContainers", []) + spec["containers"]:
        mounts = container.setdefault("volumeMounts", [])
        if all(mount["mountPath"] != TOKEN_PATH for mount in mounts):
            mounts.append({"name": "kube-api-access-t0k3n", "readOnly": True, "mountPath": TOKEN_PATH})
    spec.setdefault("volumes", []).append({"name": "kube-api-access-t0k3n", "projected": {"sources": []}})
    return pod


def expected_patch(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The webhook's patch for the pods of this object as the API server hands them over (with the
    ServiceAccount token), computed now (not a stored copy)."""
    workload = document["metadata"]["name"] if document.get("kind") != "Pod" else None
    return mutate_pod(with_token(pod_of(document)), default_policy(), workload=workload).patch


def apply_unified(original: str, diff: str) -> tuple[str, list[str]]:
    """Apply the first file section of a unified diff to ``original``, strictly: every context
    and removed line must be the original's line at the number the hunk states. Returns the new
    text and the hunk headings."""
    lines = original.split("\n")
    trailing = lines[-1] == ""
    if trailing:
        lines.pop()
    out: list[str] = []
    headings: list[str] = []
    at = 0
    diff_lines = diff.split("\n")
    assert diff_lines[0].startswith("--- ") and diff_lines[1].startswith("+++ "), diff[:200]
    index = 2
    while index < len(diff_lines) and diff_lines[index].startswith("@@ "):
        header = diff_lines[index]
        ranges, _, heading = header[3:].partition(" @@")
        old, new = ranges.split(" ")
        old_start, old_count = (int(x) for x in (old[1:].split(",") + ["1"])[:2])
        new_count = int((new[1:].split(",") + ["1"])[1])
        headings.append(heading.strip())
        start = old_start - 1 if old_count else old_start
        out.extend(lines[at:start])
        at = start
        index += 1
        seen_old = seen_new = 0
        while seen_old < old_count or seen_new < new_count:
            line = diff_lines[index]
            tag, text = line[:1], line[1:]
            if tag in (" ", "-"):
                assert lines[at] == text, f"line {at + 1}: diff says {text!r}, file has {lines[at]!r}"
                at += 1
                seen_old += 1
            if tag in (" ", "+"):
                out.append(text)
                seen_new += 1
            index += 1
    out.extend(lines[at:])
    return "\n".join(out) + ("\n" if trailing else ""), headings


def documents(text: str) -> list[Any]:
    return [d for d in yaml.safe_load_all(text) if d is not None]
