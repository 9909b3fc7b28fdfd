"""Real-shaped Plane pods and AdmissionReviews, as kube-apiserver sends them to a webhook.

A webhook sees the pod after defaulting and after the ServiceAccount admission plugin: the
projected token volume, termination message fields, tolerations and an empty status are there.
Stock values come from the plane-enterprise chart (plane-deployment.md).
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

IMAGES = ("makeplane/backend-commercial:v2.6.3", "registry.plane.tools/plane/backend-enterprise:v2.6.3")
COMPONENTS = {
    # role: (workload, container, command)
    "api": ("plane-api-wl", "plane-api", "./bin/docker-entrypoint-api-ee.sh"),
    "worker": ("plane-worker-wl", "plane-worker", "./bin/docker-entrypoint-worker.sh"),
    "beat": ("plane-beat-worker-wl", "plane-beat-worker", "./bin/docker-entrypoint-beat.sh"),
}


def plane_pod(role: str = "api", image: str = IMAGES[0], namespace: str = "plane", env: list | None = None) -> dict[str, Any]:
    workload, container, command = COMPONENTS[role]
    replicaset = f"{workload}-7d9f8b6c5"
    label = f"plane-{container}" if role != "beat" else "plane-plane-beat-worker"
    plane_container: dict[str, Any] = {
        "name": container,
        "image": image,
        "command": [command],
        "envFrom": [
            {"configMapRef": {"name": "plane-app-vars", "optional": False}},
            {"secretRef": {"name": "plane-app-secrets", "optional": False}},
        ],
        "resources": {"requests": {"cpu": "500m", "memory": "1000Mi"}, "limits": {"cpu": "1", "memory": "2000Mi"}},
        "stdin": True,
        "tty": True,
        "imagePullPolicy": "Always",
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "volumeMounts": [
            {
                "name": "kube-api-access-x7k2p",
                "readOnly": True,
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
            }
        ],
    }
    if role == "api":
        plane_container["ports"] = [{"containerPort": 8000, "protocol": "TCP"}]
    if env is not None:
        plane_container["env"] = env
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "generateName": f"{replicaset}-",
            "namespace": namespace,
            "creationTimestamp": None,
            "labels": {"app.name": label, "pod-template-hash": "7d9f8b6c5"},
            "annotations": {"timestamp": "2026-11-20T10:00:00Z"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": replicaset,
                    "uid": "2b5b2f1e-0d7c-4a7e-9f40-5c1d9a2e6f11",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "managedFields": [
                {
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": "2026-11-20T10:00:01Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:generateName": {}}},
                }
            ],
        },
        "spec": {
            "volumes": [
                {
                    "name": "kube-api-access-x7k2p",
                    "projected": {
                        "sources": [
                            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                            {
                                "downwardAPI": {
                                    "items": [
                                        {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
                                    ]
                                }
                            },
                        ],
                        "defaultMode": 420,
                    },
                }
            ],
            "containers": [plane_container],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "plane-srv-account",
            "serviceAccount": "plane-srv-account",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            ],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {},
    }


def review(
    pod: dict[str, Any] | None,
    api_version: str = "admission.k8s.io/v1",
    *,
    uid: str | None = None,
    operation: str = "CREATE",
    dry_run: bool = False,
    kind: str = "Pod",
    resource: str = "pods",
    namespace: str = "plane",
) -> dict[str, Any]:
    """An AdmissionReview request exactly as the API server builds it for a ReplicaSet's pod."""
    gvk = {"group": "", "version": "v1", "kind": kind}
    gvr = {"group": "", "version": "v1", "resource": resource}
    return {
        "kind": "AdmissionReview",
        "apiVersion": api_version,
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "namespace": namespace,
            "operation": operation,
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "6c1f3d9e-9a51-4b0e-8d8e-3c1b8e7f0a42",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
            },
            "object": copy.deepcopy(pod) if pod is not None else None,
            "oldObject": None,
            "dryRun": dry_run,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }
