"""The pod as the API server hands it to the admission webhooks, made from a manifest's pod (template).

Before any webhook runs, the ServiceAccount admission plugin adds the pod's API token: a projected
volume ``kube-api-access-<5 random characters>`` and, in every container (init containers first)
that has nothing mounted at the token path, a read-only mount of it. The webhook's patch is written
for that pod: it appends plane-guard's volume and mounts (``add /spec/volumes/-``), where a patch
made on a chart's template (no ``volumes``) would set the whole list and drop the token. So
``preview --patch`` computes its patch on this shape, the patch of the pods actually created.

The plugin leaves the token out when ``automountServiceAccountToken`` is false on the pod, else on
its ServiceAccount. Preview sees the pod's own setting, and the ServiceAccount's when the input holds
that ServiceAccount; otherwise it assumes automount, the Kubernetes default (Plane's charts set it).
The plugin also gives a pod without ``imagePullSecrets`` those of its ServiceAccount, which matters
when the policy adds the runtime image's pull secrets: preview copies them from a ServiceAccount in
the input, and assumes none for one that is not.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from webhook.core import conventions
from webhook.core.mutation import as_map

TOKEN_VOLUME_PREFIX = "kube-api-access-"
#: The API server picks 5 random characters; the name never appears in a plane-guard patch.
TOKEN_VOLUME = TOKEN_VOLUME_PREFIX + "xxxxx"
TOKEN_PATH = conventions.SERVICE_ACCOUNT_TOKEN_PATH
NAMESPACE = "metadata.namespace"
#: What the plugin mounts (``TokenVolumeSource`` in Kubernetes' serviceaccount admission plugin).
TOKEN_SOURCE = {
    "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": NAMESPACE}}]}},
    ],
    "defaultMode": 420,
}
WITH_TOKEN = f"with the ServiceAccount token volume {TOKEN_VOLUME_PREFIX}* and its mounts"
WITHOUT_TOKEN = "without a ServiceAccount token volume"



class Account(NamedTuple):
    """What the plugin takes from a ServiceAccount."""

    automount: bool | None  # automountServiceAccountToken, None when unset
    pull_secrets: list[dict[str, Any]]  # its imagePullSecrets, as references


#: (namespace or None, ServiceAccount name) -> what the plugin takes from it.
Accounts = dict[tuple[str | None, str], Account]


@dataclass(frozen=True)
class Admitted:
    """The pod the webhook receives, and a sentence on what it carries and why."""

    pod: dict[str, Any]
    token: bool
    why: str


def service_accounts(objects: list[tuple[str | None, dict[str, Any]]]) -> Accounts:
    """The ServiceAccounts among (namespace, object) pairs, with their automount setting and pull secrets."""
    found: Accounts = {}
    for namespace, value in objects:
        name = as_map(value.get("metadata")).get("name")
        if value.get("kind") == "ServiceAccount" and str(value.get("apiVersion")) == "v1" and isinstance(name, str):
            automount = value.get("automountServiceAccountToken")
            secrets = value.get("imagePullSecrets")
            references = [{"name": s["name"]} for s in secrets or [] if isinstance(s, dict) and isinstance(s.get("name"), str)] \
                if isinstance(secrets, list) else []
            found[(namespace, name)] = Account(automount if isinstance(automount, bool) else None, references)
    return found


def _account_name(spec: dict[str, Any]) -> str:
    for key in ("serviceAccountName", "serviceAccount"):
        if isinstance(spec.get(key), str) and spec[key]:
            return spec[key]
    return "default"


def _automount(spec: dict[str, Any], namespace: str | None, accounts: Accounts) -> tuple[bool, str]:
    """Whether the plugin mounts the token, and why, as the plugin decides: the pod, then its ServiceAccount."""
    own = spec.get("automountServiceAccountToken")
    if isinstance(own, bool):
        return own, f"the pod sets automountServiceAccountToken: {str(own).lower()}"
    name = _account_name(spec)
    where = f"{namespace}/{name}" if namespace else name
    if (namespace, name) not in accounts:
        return True, f"assumed: ServiceAccount {where} is not in the input; automount taken as on (Kubernetes' default)"
    setting = accounts[(namespace, name)].automount
    if setting is False:
        return False, f"ServiceAccount {where} in the input sets automountServiceAccountToken: false"
    return True, f"ServiceAccount {where} in the input does not turn automountServiceAccountToken off"


def admitted(pod: Any, namespace: str | None, accounts: Accounts) -> Admitted:
    """``pod`` (a copy) as the ServiceAccount admission plugin leaves it; malformed parts stay as they are."""
    pod = copy.deepcopy(pod)
    if not isinstance(pod, dict) or not isinstance(pod.get("spec"), dict):
        return Admitted(pod, False, "as written (not a pod spec)")
    if not isinstance(pod.get("metadata"), dict):
        pod["metadata"] = {}  # a created pod always has metadata (a name, a namespace)
    spec = pod["spec"]
    name = _account_name(spec)
    account = accounts.get((namespace, name))
    result = _with_token(pod, spec, namespace, accounts)
    if account and account.pull_secrets and not spec.get("imagePullSecrets"):
        spec["imagePullSecrets"] = copy.deepcopy(account.pull_secrets)
        where = f"{namespace}/{name}" if namespace else name
        return replace(result, why=f"{result.why}, and the imagePullSecrets of ServiceAccount {where}")
    return result


def _with_token(pod: dict[str, Any], spec: dict[str, Any], namespace: str | None, accounts: Accounts) -> Admitted:
    """The token volume and its mounts, as the plugin adds them."""
    volumes = spec.get("volumes")
    if volumes is not None and not isinstance(volumes, list):
        return Admitted(pod, False, "as written (spec.volumes is not a list)")
    names = [v.get("name") for v in volumes or [] if isinstance(v, dict)]
    existing = next((n for n in names if isinstance(n, str) and n.startswith(TOKEN_VOLUME_PREFIX)), None)
    mount, why = _automount(spec, namespace, accounts)
    if not mount:
        return Admitted(pod, existing is not None, f"{WITH_TOKEN if existing else WITHOUT_TOKEN} ({why})")
    name = existing or TOKEN_VOLUME
    needed = False
    for key in ("initContainers", "containers"):
        containers = spec.get(key)
        for container in containers if isinstance(containers, list) else []:
            if not isinstance(container, dict):
                continue
            mounts = container.setdefault("volumeMounts", [])
            if not isinstance(mounts, list):
                continue
            if not any(isinstance(m, dict) and m.get("mountPath") == TOKEN_PATH for m in mounts):
                mounts.append({"name": name, "readOnly": True, "mountPath": TOKEN_PATH})
                needed = True
    if needed and existing is None:
        spec["volumes"] = [*(volumes or []), {"name": name, "projected": copy.deepcopy(TOKEN_SOURCE)}]
    token = existing is not None or needed
    return Admitted(pod, token, f"{WITH_TOKEN if token else WITHOUT_TOKEN} ({why})")
