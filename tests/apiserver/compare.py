"""Comparing pods as the API server stores them, field by field.

Two creations of the same pod differ only in what the server makes up per object (uid, times,
resourceVersion, managedFields, and the random suffix of the ServiceAccount token volume), so
those are left out or made constant; everything else, status's QoS class included, is compared.
Volumes and volume mounts are lists the API treats as maps (keyed by name and by mount path),
and they are compared as such: the ServiceAccount admission plugin adds the token before the
webhooks run on a pod a user creates, but after the webhook's changes on a pod created from
``plane-guard preview``'s output, so only their order differs.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_VOLUME_PREFIX = "kube-api-access-"
TOKEN_VOLUME = TOKEN_VOLUME_PREFIX + "*"
#: Set by the API server for each object.
PER_OBJECT = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation", "namespace", "name")


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod["spec"]
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def token_mounts(pod: dict[str, Any]) -> dict[str, int]:
    """Container name -> how many token mounts it has (the ServiceAccount admission plugin's)."""
    return {c["name"]: sum(m.get("mountPath") == TOKEN_PATH for m in c.get("volumeMounts", [])) for c in containers(pod)}


def token_volumes(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(v, name=TOKEN_VOLUME) for v in pod["spec"].get("volumes", []) if v["name"].startswith(TOKEN_VOLUME_PREFIX)]


def comparable(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod without per-object fields, the token volume's name made constant, status as its QoS class."""
    pod = copy.deepcopy(pod)
    for key in PER_OBJECT:
        pod["metadata"].pop(key, None)
    spec = pod["spec"]
    for volume in spec.get("volumes", []):
        if volume["name"].startswith(TOKEN_VOLUME_PREFIX):
            volume["name"] = TOKEN_VOLUME
    if "volumes" in spec:
        spec["volumes"].sort(key=lambda v: v["name"])
    for container in containers(pod):
        for mount in container.get("volumeMounts", []):
            if mount["name"].startswith(TOKEN_VOLUME_PREFIX):
                mount["name"] = TOKEN_VOLUME
        container.get("volumeMounts", []).sort(key=lambda m: m["mountPath"])
    pod["status"] = {"qosClass": pod.get("status", {}).get("qosClass")}
    return pod


def differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[dict[str, Any]]:
    """Field-by-field differences as RFC 6902 operations turning ``expected`` into ``actual``."""
    return jsonpatch.make_patch(comparable(expected), comparable(actual)).patch
