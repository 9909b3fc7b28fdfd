"""What the chart tests share: the real helm, renders of the chart, and the normalised form in
which a chart render and a kustomize render are compared.

Every test that calls :func:`helm` carries the ``helm`` marker; without helm it skips, and the
reason says how to get one (``make helm``). Renders are cached per argument list: each is a
``helm template`` process of about 0.1 s, and the tests ask for the same few many times.
"""

from __future__ import annotations

import copy
import functools
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tools import prerequisites

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "manifests" / "helm" / "plane-guard"
FILES = CHART / "files"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
#: The release the README installs: its objects have the names manifests/base has.
RELEASE, NAMESPACE = "plane-guard", "plane-guard"

#: Labels only Helm puts on objects (manifests/base has neither release nor chart version).
HELM_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance")
#: kustomize's configMapGenerator suffix: a dash and 10 characters of the content hash.
_KUSTOMIZE_HASH = re.compile(r"^(?P<name>.+)-[a-z0-9]{10}$")


def helm(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real helm (tests that call this carry the ``helm`` marker)."""
    command = prerequisites.find("helm")
    assert command, "helm is not on PATH nor in .venv/bin: the helm marker should have skipped this test"
    return subprocess.run([command, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


@functools.cache
def _template(args: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    done = helm("template", *args)
    assert done.returncode == 0, f"helm template {' '.join(args)} failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc is not None)


def template(*values: Path | str, release: str = RELEASE, namespace: str = NAMESPACE, sets: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The objects ``helm template`` makes of the chart with these values files (fresh copies)."""
    args = [release, str(CHART), "--namespace", namespace]
    for path in values:
        args += ["--values", str(path)]
    for item in sets:
        args += ["--set", item]
    return copy.deepcopy(list(_template(tuple(args))))


def is_hook(doc: dict[str, Any]) -> bool:
    return "helm.sh/hook" in (doc.get("metadata", {}).get("annotations") or {})


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and not is_hook(d)]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def policy_text(docs: list[dict[str, Any]]) -> str:
    config_map = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-policy"))
    return config_map["data"]["policy.yaml"]


def _drop_helm_only(value: Any) -> Any:
    if isinstance(value, dict):
        cleaned = {}
        for key, item in value.items():
            if key in HELM_LABELS or (isinstance(key, str) and key.startswith("checksum/")):
                continue
            item = _drop_helm_only(item)
            if key in ("labels", "annotations", "matchLabels") and item == {}:
                continue
            cleaned[key] = item
        return cleaned
    if isinstance(value, list):
        return [_drop_helm_only(item) for item in value]
    return value


def _rename(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {key: _rename(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [_rename(item, names) for item in value]
    if isinstance(value, str):
        return names.get(value, value)
    return value


def normalised_kustomize(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """kustomize's objects by (kind, name), the generated ConfigMap under its name without the hash."""
    names = {}
    for doc in docs:
        found = _KUSTOMIZE_HASH.match(doc["metadata"]["name"])
        if doc["kind"] == "ConfigMap" and found:
            names[doc["metadata"]["name"]] = found.group("name")
    return {(d["kind"], names.get(d["metadata"]["name"], d["metadata"]["name"])): _rename(d, names) for d in docs}


def normalised_chart(docs: list[dict[str, Any]], revision: int = 1) -> dict[tuple[str, str], dict[str, Any]]:
    """The chart's objects by (kind, name), without hooks (``helm test``), Helm's own labels and
    checksum annotations; the bootstrap Job under its name without the release revision."""
    names = {}
    for doc in docs:
        name = doc["metadata"]["name"]
        if doc["kind"] == "Job" and name.endswith(f"-certs-bootstrap-{revision}"):
            names[name] = name.removesuffix(f"-{revision}")
    kept = [_rename(_drop_helm_only(d), names) for d in docs if not is_hook(d)]
    return {(d["kind"], d["metadata"]["name"]): d for d in kept}


def differences(expected: Any, found: Any, path: str = "") -> list[str]:
    """Where two JSON-like values differ, one line per leaf (empty when they are equal)."""
    if isinstance(expected, dict) and isinstance(found, dict):
        lines = []
        for key in sorted(set(expected) | set(found), key=str):
            if key not in found:
                lines.append(f"{path}/{key}: only in kustomize: {expected[key]!r}"[:300])
            elif key not in expected:
                lines.append(f"{path}/{key}: only in the chart: {found[key]!r}"[:300])
            else:
                lines += differences(expected[key], found[key], f"{path}/{key}")
        return lines
    if isinstance(expected, list) and isinstance(found, list) and len(expected) == len(found):
        return [line for i, (a, b) in enumerate(zip(expected, found)) for line in differences(a, b, f"{path}/{i}")]
    return [] if expected == found else [f"{path}: kustomize {expected!r} != chart {found!r}"[:300]]
