"""The runtime image's pull secrets (``runtime.imagePullSecrets``): added to Plane pods when missing.

A runtime image on a private registry needs credentials on every node that starts a Plane pod;
the pods' own ServiceAccount may not carry them. The policy names Secrets (in each Plane
namespace); the webhook appends the ones a pod lacks, after those the pod or its ServiceAccount
already has, and touches nothing else.
"""

from __future__ import annotations

import copy

import jsonpatch
import kubernetes_validate
import pytest
import yaml

from tests.fixtures import golden
from webhook.core.mutation import apply_patch, mutate_pod
from webhook.core.policy import PolicyError, default_policy, default_policy_text, load_policy_text
from webhook.ops.preview_admitted import admitted, service_accounts

K8S_VERSION = kubernetes_validate.latest_version()


def policy_with(*secrets: str):
    document = yaml.safe_load(default_policy_text())
    document["runtime"]["imagePullSecrets"] = list(secrets)
    return load_policy_text(yaml.safe_dump(document, sort_keys=False))


def pull_secrets(pod: dict) -> list[str]:
    return [s["name"] for s in pod["spec"].get("imagePullSecrets") or []]


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        (None, ["mirror", "mirror-2"]),
        ([], ["mirror", "mirror-2"]),
        ([{"name": "plane-registry"}], ["plane-registry", "mirror", "mirror-2"]),
        ([{"name": "mirror-2"}, {"name": "plane-registry"}], ["mirror-2", "plane-registry", "mirror"]),
    ],
)
def test_missing_pull_secrets_are_appended_after_the_pods_own(existing, expected):
    pod = golden.load_input("worker")
    if existing is not None:
        pod["spec"]["imagePullSecrets"] = existing
    outcome = mutate_pod(pod, policy_with("mirror", "mirror-2"))
    mutated = apply_patch(pod, outcome.patch)
    assert pull_secrets(mutated) == expected
    assert "pod:runtime-pull-secrets" in outcome.changes
    kubernetes_validate.validate(mutated, K8S_VERSION, strict=True)
    # Nothing but the pull secrets differs from the pod the default policy makes.
    plain = apply_patch(pod, mutate_pod(pod, default_policy()).patch)
    difference = [op["path"] for op in jsonpatch.make_patch(plain, mutated).patch]
    assert all(p.startswith("/spec/imagePullSecrets") or p.startswith("/metadata/annotations") for p in difference), difference


def test_a_second_pass_adds_nothing():
    """Reinvocation: the pod the webhook already changed gets no second copy of any name."""
    policy = policy_with("mirror")
    once = apply_patch(golden.load_input("api-envfrom-secret"), mutate_pod(golden.load_input("api-envfrom-secret"), policy).patch)
    assert mutate_pod(once, policy).patch == []
    assert pull_secrets(once) == ["mirror"]


def test_none_by_default_and_the_default_digest_does_not_move():
    """Policies without pull secrets keep the digest they had, so pods guarded before stay current."""
    pod = golden.load_input("worker")
    outcome = mutate_pod(pod, default_policy())
    assert not [op for op in outcome.patch if op["path"].startswith("/spec/imagePullSecrets")]
    assert "pod:runtime-pull-secrets" not in outcome.changes
    assert default_policy().runtime.image_pull_secrets == []
    assert policy_with().digest == default_policy().digest
    assert policy_with("mirror").digest != default_policy().digest


def test_a_pod_that_is_not_plane_s_gets_none():
    pod = golden.load_input("worker")
    pod["spec"]["containers"][0]["image"] = "docker.io/library/busybox:1.36"
    pod["spec"]["containers"][0]["command"] = ["sleep", "3600"]
    assert mutate_pod(pod, policy_with("mirror")).patch == []


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        (["Mirror"], "'Mirror' is not a Secret name"),
        (["mirror_creds"], "is not a Secret name"),
        (["-mirror"], "is not a Secret name"),
        (["a" * 254], "is not a Secret name"),
        (["mirror", "mirror"], "each Secret may be named once"),
        ([f"s{i}" for i in range(17)], "at most 16 items"),
    ],
)
def test_bad_secret_names_are_refused_with_the_field(secrets, message):
    with pytest.raises(PolicyError) as raised:
        policy_with(*secrets)
    assert "runtime.imagePullSecrets" in str(raised.value) and message in str(raised.value)


def test_kubernetes_references_are_read_as_names_and_anything_else_is_refused():
    document = yaml.safe_load(default_policy_text())
    document["runtime"]["imagePullSecrets"] = [{"name": "mirror"}, "mirror-2"]
    assert load_policy_text(yaml.safe_dump(document)).runtime.image_pull_secrets == ["mirror", "mirror-2"]
    document["runtime"]["imagePullSecrets"] = [{"name": "mirror", "namespace": "other"}]
    with pytest.raises(PolicyError) as raised:
        load_policy_text(yaml.safe_dump(document))
    assert "runtime.imagePullSecrets.0" in str(raised.value)


SERVICE_ACCOUNT = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "plane-srv-account"},
                   "imagePullSecrets": [{"name": "plane-registry"}]}


def test_preview_gives_a_pod_without_pull_secrets_those_of_its_service_account():
    """As the ServiceAccount admission plugin does: so the previewed patch appends, as the webhook's will."""
    pod = golden.load_input("worker")
    pod["spec"]["serviceAccountName"] = "plane-srv-account"
    accounts = service_accounts([("plane", SERVICE_ACCOUNT)])
    seen = admitted(pod, "plane", accounts)
    assert pull_secrets(seen.pod) == ["plane-registry"]
    assert seen.why.endswith("and the imagePullSecrets of ServiceAccount plane/plane-srv-account")
    patch = mutate_pod(seen.pod, policy_with("mirror")).patch
    assert {"op": "add", "path": "/spec/imagePullSecrets/-", "value": {"name": "mirror"}} in patch
    # The pod's own list wins, as in the plugin; an account not in the input gives none.
    own = copy.deepcopy(pod)
    own["spec"]["imagePullSecrets"] = [{"name": "own"}]
    assert pull_secrets(admitted(own, "plane", accounts).pod) == ["own"]
    assert pull_secrets(admitted(pod, "elsewhere", accounts).pod) == []
    assert "imagePullSecrets" not in admitted(pod, "elsewhere", accounts).why
