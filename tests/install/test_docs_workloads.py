"""The README's per-workload advice works: its restart lines name every chart workload the default
policy changes, and its ``workloads`` example is a valid policy that does what the text says."""

from __future__ import annotations

import re

from tests.install.conftest import REPO
from webhook.core import conventions
from webhook.core.mutation import apply_patch, mutate_pod, role_of
from webhook.core.policy import default_policy, default_policy_text, load_policy_text

DOC = (REPO / "README.md").read_text()
SECTION = DOC[DOC.index("## Opt a namespace in"):DOC.index("## See what would change")]
#: The plane-enterprise chart's backend components on the shared backend image (release ``plane``:
#: container ``plane-<component>``, Deployment ``plane-<component>-wl``, ``app.name: plane-plane-<component>``).
ENTERPRISE = ("api", "external-api", "worker", "worker-importers", "beat-worker",
              "automation-consumer", "outbox-poller", "webhook-consumer", "agent-consumer")
CE = ("api", "worker", "beat-worker")
IMAGE = "artifacts.plane.so/makeplane/backend-commercial:v3.1.2"


def restart_lines() -> list[set[str]]:
    lines = re.findall(r"^kubectl -n plane rollout restart (.+)$", SECTION, re.MULTILINE)
    return [set(re.findall(r"deployment/([\w-]+)", line)) for line in lines]


def pod(component: str, owner: str | None = None) -> dict:
    metadata: dict = {"name": f"plane-{component}-wl-5d9b7d44b9-27khd", "labels": {"app.name": f"plane-plane-{component}"}}
    if owner:
        metadata["labels"]["pod-template-hash"] = "5d9b7d44b9"
        metadata["ownerReferences"] = [{"kind": "ReplicaSet", "name": f"{owner}-5d9b7d44b9", "controller": True, "uid": "u"}]
    return {"metadata": metadata, "spec": {"containers": [
        {"name": f"plane-{component}", "image": IMAGE, "envFrom": [{"secretRef": {"name": "plane-app-secrets"}}]}]}}


def test_the_restart_lines_name_every_backend_workload_plane_guard_changes():
    policy = default_policy()
    for component in ENTERPRISE:
        match = role_of(pod(component)["spec"]["containers"][0], {}, policy)
        assert match is not None and not match[1].skip, component
    enterprise, ce = restart_lines()
    assert enterprise == {f"plane-{c}-wl" for c in ENTERPRISE}
    assert ce == {f"plane-{c}-wl" for c in CE}


def test_the_workloads_example_is_a_policy_that_does_what_the_text_says():
    (example,) = re.findall(r"```yaml\n(workloads:\n.*?)```", SECTION, re.DOTALL)
    policy = load_policy_text(default_policy_text() + "\n" + example, "README example")
    assert len(policy.workloads) == 2

    outcome = mutate_pod(pod("worker-importers"), policy)
    assert outcome.patch == [] and outcome.reasons == ("opted-out-by-policy",)
    assert outcome.notes == ("left unchanged by the policy: the importers are restarted by hand after each import",)

    external = pod("external-api", owner="plane-external-api-wl")
    changed = apply_patch(external, mutate_pod(external, policy).patch)
    env = {e["name"]: e.get("value") for e in changed["spec"]["containers"][0]["env"]}
    assert env[conventions.ENV_PUBLISH_TIMEOUT] == "30"
    assert conventions.ENV_AMQP_HEARTBEAT not in env
    # Any other api workload keeps the role's own settings.
    api = pod("api", owner="plane-api-wl")
    env = {e["name"]: e.get("value") for e in apply_patch(api, mutate_pod(api, policy).patch)["spec"]["containers"][0]["env"]}
    assert env[conventions.ENV_PUBLISH_TIMEOUT] == "10" and env[conventions.ENV_AMQP_HEARTBEAT] == "60"
