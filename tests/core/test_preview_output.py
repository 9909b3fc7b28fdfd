"""``--patch``, ``--diff`` and ``-n`` on helm output: our small helm-shaped fixtures, and the
hand-written mirrors of Plane's chart renders in ``tests/fixtures/charts``.

Expectations are computed with ``mutate_pod`` while the test runs, so they follow the mutation."""

from __future__ import annotations

import json
import re

import jsonpatch
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.core.preview_fixtures import (
    CHART_RENDER_NAMES,
    CHART_RENDERS,
    apply_unified,
    documents,
    expected_patch,
    helm_render,
    pod_of,
    preview,
    with_token,
)
from tests.fixtures import golden
from webhook.core import conventions as names
from webhook.core.mutation import mutate_pod
from webhook.core.policy import default_policy
from webhook.ops.preview import TEMPLATE_PATHS
from webhook.ops.preview_diff import apply_edits, document_edits, dump_lines

POD = golden.load_input("api-envfrom-secret")
POD_NAME = "plane-api-wl-7d9f8b6c5-(generated)"


def _label(document: dict, namespace: str | None = None) -> str:
    ns = document["metadata"].get("namespace") or namespace
    return f"{document['kind']} {ns + '/' if ns else ''}{document['metadata']['name']}"


def _check_patches(text: str, stdout: str, namespace: str | None = None) -> list[dict]:
    """One labelled entry per object with a pod, in input order, each the webhook's own patch."""
    entries = json.loads(stdout)
    workloads = [d for d in documents(text) if d["kind"] in TEMPLATE_PATHS]
    assert [(e["kind"], e["namespace"], e["name"]) for e in entries] == [
        (d["kind"], d["metadata"].get("namespace") or namespace, d["metadata"]["name"]) for d in workloads
    ]
    for entry, workload in zip(entries, workloads):
        assert entry["pod"] == TEMPLATE_PATHS[workload["kind"]]
        assert entry["patch"] == expected_patch(workload), entry["name"]
        line = int(entry["source"].rpartition(":")[2])
        assert text.split("\n")[line - 1] == "apiVersion: " + workload["apiVersion"], entry
    return entries


def _check_diff(text: str, diff: str, mutated_stdout: str) -> list[str]:
    """The diff applies to the user's text line for line and gives exactly the mutated objects."""
    assert "normalised" not in diff
    patched, headings = apply_unified(text, diff)
    assert documents(patched) == documents(mutated_stdout)
    changed = [_label(d) for d, m in zip(documents(text), documents(mutated_stdout)) if d != m]
    assert set(headings) == set(changed)
    return headings


def test_patch_gives_one_labelled_patch_per_object_of_a_helm_render():
    text = helm_render()
    result = preview("-f", "-", "--patch", stdin=text)
    assert result.returncode == 0, result.stderr
    entries = _check_patches(text, result.stdout)
    assert [e["name"] for e in entries if e["patch"]] == ["plane-api-wl", "plane-worker-wl", "plane-beat-worker-wl"]
    assert [e["name"] for e in entries if not e["patch"]] == ["plane-api-migrate"]


def test_patch_in_audit_or_not_opted_in_is_labelled_and_empty():
    for label in ("audit", "none"):
        result = preview("-f", "-", "--patch", "--namespace-label", label, stdin=helm_render())
        assert result.returncode == 0, result.stderr
        assert {e["name"]: e["patch"] for e in json.loads(result.stdout)}["plane-api-wl"] == []


def test_diff_hunks_are_the_users_own_lines():
    text = helm_render()
    diff = preview("-f", "-", "--diff", stdin=text)
    mutated = preview("-f", "-", stdin=text)
    assert diff.returncode == 0 and mutated.returncode == 0, diff.stderr
    assert diff.stdout.startswith("--- stdin\n+++ stdin\t")
    headings = _check_diff(text, diff.stdout, mutated.stdout)
    assert "Deployment plane/plane-worker-wl" in headings
    removed = [line for line in diff.stdout.splitlines() if line.startswith("-") and not line.startswith("---")]
    # None of the user's lines goes: the worker's own pool limit stays, and its container decides
    # at start between it and the policy's default (keep), next to the line that stays.
    assert removed == []
    lines = diff.stdout.splitlines()
    assert "           - name: CELERY_BROKER_POOL_LIMIT   # tuned by hand" in lines
    added = [line[1:].strip() for line in lines if line.startswith("+") and not line.startswith("+++")]
    assert "- name: PLANE_GUARD_DEFAULT_CELERY_BROKER_POOL_LIMIT" in added
    assert "\n+          - /plane-guard/entrypoint.sh\n           - /bin/bash\n" in diff.stdout


@pytest.mark.parametrize("name", CHART_RENDER_NAMES)
def test_chart_renders_patch_and_diff(name):
    """``helm template`` of plane-ce and plane-enterprise (our mirrors) piped in as a user would."""
    text = (CHART_RENDERS / name).read_text()
    patch = preview("-f", "-", "--patch", stdin=text)
    diff = preview("-f", "-", "--diff", stdin=text)
    mutated = preview("-f", "-", stdin=text)
    for result in (patch, diff, mutated):
        assert result.returncode == 0, result.stderr
        notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
        assert all(line.endswith("is empty; skipped") for line in notes), notes  # helm prints empty templates
    entries = _check_patches(text, patch.stdout)
    changed = {e["name"] for e in entries if e["patch"]}
    assert {"plane-api-wl", "plane-worker-wl", "plane-beat-worker-wl"} <= changed
    if name == "plane-enterprise-full-shaped.yaml":
        assert {"plane-external-api-wl", "plane-worker-importers-wl"} <= changed
    # The charts' ServiceAccount mounts the token: every patch keeps it, on pods with or without volumes.
    for entry in entries:
        assert "ServiceAccount plane/plane-srv-account in the input" in entry["appliesTo"], entry["appliesTo"]
        assert not any(op["path"] == "/spec/volumes" for op in entry["patch"]), entry["name"]
    headings = _check_diff(text, diff.stdout, mutated.stdout)
    assert {f"Deployment plane/{n}" for n in changed} == set(headings)


def _entries(stdin: str, *args: str) -> dict[str, dict]:
    result = preview("-f", "-", "--patch", *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return {entry["name"]: entry for entry in json.loads(result.stdout)}


def _tokens(pod: dict) -> tuple[list[str], list[int]]:
    """Token volume names, and how many token mounts each container has."""
    volumes = [v["name"] for v in pod["spec"].get("volumes", []) if v["name"].startswith("kube-api-access-")]
    mounts = [
        sum(m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount" for m in c.get("volumeMounts", []))
        for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
    ]
    return volumes, mounts


def test_patch_applies_to_the_pod_the_api_server_creates_and_keeps_its_token():
    """A chart's template has no volumes; its pods arrive with the token: the patch appends to that."""
    text = (CHART_RENDERS / "plane-ce-shaped.yaml").read_text()
    result = preview("-f", "-", "--patch", stdin=text)
    assert result.returncode == 0, result.stderr
    assert "--patch: each patch is the webhook's answer for a pod as the API server hands it over" in result.stderr
    entries = {entry["name"]: entry for entry in json.loads(result.stdout)}
    for document in documents(text):
        if document["kind"] != "Deployment" or not entries[document["metadata"]["name"]]["patch"]:
            continue
        template = pod_of(document)
        assert "volumes" not in template["spec"]
        arrived = with_token(template)
        patched = jsonpatch.apply_patch(arrived, entries[document["metadata"]["name"]]["patch"])
        assert _tokens(patched)[0] == ["kube-api-access-t0k3n"] and set(_tokens(patched)[1]) == {1}
        assert [v["name"] for v in patched["spec"]["volumes"]] == ["kube-api-access-t0k3n", names.RUNTIME_VOLUME]
        # What a patch made on the template as written would do to that pod: drop the token.
        careless = jsonpatch.apply_patch(arrived, mutate_pod(template, default_policy()).patch)
        assert _tokens(careless)[0] == []
    assert "--patch:" not in preview("-f", "-", stdin=text).stderr  # the mutated YAML is the manifest's own


def test_without_automount_the_patch_is_for_a_pod_with_no_token():
    """automountServiceAccountToken off, on the pod or on a ServiceAccount in the input: no token, and
    the patch sets the whole volumes list; a ServiceAccount of another namespace does not count."""
    pod = json.loads(json.dumps(POD))
    off = json.loads(json.dumps(POD))
    off["spec"]["automountServiceAccountToken"] = False
    entry = _entries(json.dumps(off))[POD_NAME]
    said = "without a ServiceAccount token volume (the pod sets automountServiceAccountToken: false)"
    assert said in entry["appliesTo"]
    assert any(op["op"] == "add" and op["path"] == "/spec/volumes" for op in entry["patch"])
    assert [v["name"] for v in jsonpatch.apply_patch(off, entry["patch"])["spec"]["volumes"]] == [names.RUNTIME_VOLUME]

    def account(namespace: str, automount: bool) -> str:
        metadata = {"name": "plane-srv-account", "namespace": namespace}
        body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata}
        return yaml.safe_dump({**body, "automountServiceAccountToken": automount})

    pod_text = yaml.safe_dump(pod)
    entry = _entries(account("plane", False) + "---\n" + pod_text)[POD_NAME]
    said = "ServiceAccount plane/plane-srv-account in the input sets automountServiceAccountToken: false"
    assert said in entry["appliesTo"]
    assert any(op["path"] == "/spec/volumes" for op in entry["patch"])
    for stream, said in (
        (account("plane", True) + "---\n" + pod_text, "in the input does not turn automountServiceAccountToken off"),
        (account("elsewhere", False) + "---\n" + pod_text, "assumed: ServiceAccount plane/plane-srv-account is not in"),
    ):
        entry = _entries(stream)[POD_NAME]
        assert said in entry["appliesTo"] and entry["patch"] == expected_patch(pod)
        assert not any(op["path"] == "/spec/volumes" for op in entry["patch"])


def test_a_pod_that_already_has_its_token_is_patched_as_it_is():
    """``kubectl get pod -o yaml`` output: the token is there, nothing is added twice."""
    pod = with_token(POD)
    pod["spec"]["volumes"][0]["name"] = "kube-api-access-abcde"
    pod["spec"]["containers"][0]["volumeMounts"][0]["name"] = "kube-api-access-abcde"
    entry = _entries(json.dumps(pod))[POD_NAME]
    assert entry["patch"] == mutate_pod(pod, default_policy()).patch
    assert _tokens(jsonpatch.apply_patch(pod, entry["patch"])) == (["kube-api-access-abcde"], [1, 1])


def test_namespace_option_names_objects_that_have_none():
    text = helm_render(namespace=None)
    result = preview("-f", "-", "--patch", "-n", "plane", stdin=text)
    assert result.returncode == 0, result.stderr
    _check_patches(text, result.stdout, namespace="plane")
    assert "Deployment plane/plane-api-wl (stdin:" in result.stderr
    without = preview("-f", "-", "--patch", stdin=text)
    assert {e["namespace"] for e in json.loads(without.stdout)} == {None}
    assert "Deployment plane-api-wl (stdin:" in without.stderr
    opted_out = preview("-f", "-", "-n", "plane", "--namespace-label", "none", stdin=text)
    assert "plane is not opted in" in opted_out.stderr


def test_namespace_option_refuses_objects_of_another_namespace_like_kubectl():
    result = preview("-f", "-", "-n", "other", stdin=helm_render())
    assert result.returncode == 2 and result.stdout == ""
    assert "ConfigMap plane/plane-app-vars names namespace plane, but -n other was given" in result.stderr
    assert "pass -n plane, or leave -n out" in result.stderr
    assert preview("-f", "-", "-n", "plane", stdin=helm_render()).returncode == 0


def test_json_input_diff_says_it_compares_normalised_yaml(tmp_path):
    path = tmp_path / "pod.json"
    path.write_text(json.dumps(POD, indent=2))
    result = preview("-f", str(path), "--diff")
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0]
    assert header == f"--- {path}\tdocument 1 (Pod plane/plane-api-wl-7d9f8b6c5-(generated)), normalised YAML: line numbers count in this document, not in the file"
    assert f"{path}:1 (document 1): it is JSON or flow-style YAML, so its diff compares normalised YAML" in result.stderr
    hunks = [line for line in result.stdout.splitlines() if line.startswith("@@")]
    assert hunks and all(h.endswith("@@ Pod plane/plane-api-wl-7d9f8b6c5-(generated)") for h in hunks)


def test_a_mixed_stream_diffs_editable_documents_in_place_and_the_rest_normalised():
    text = helm_render() + "---\n" + json.dumps(POD) + "\n"
    result = preview("-f", "-", "--diff", stdin=text)
    assert result.returncode == 0, result.stderr
    in_place, _, normalised = result.stdout.partition("--- stdin\tdocument 7")
    assert normalised and "normalised YAML" in normalised.splitlines()[0]
    patched, _ = apply_unified(text, in_place)
    assert documents(patched)[:6] == documents(preview("-f", "-", stdin=helm_render()).stdout)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [POD, POD]}), "it uses YAML anchors and aliases"),
        (yaml.safe_dump(POD).replace("\n", "\r"), "the file breaks lines with CR, NEL, LS or PS"),
    ],
)
def test_documents_that_cannot_be_edited_in_place_say_why(text, reason):
    result = preview("-f", "-", "--diff", stdin=text)
    assert result.returncode == 0, result.stderr
    assert f"stdin:1 (document 1): {reason}, so its diff compares normalised YAML" in result.stderr
    assert result.stdout.startswith("--- stdin\tdocument 1 (") and "normalised YAML: line numbers count in this document" in result.stdout


def test_crlf_files_keep_their_line_ends():
    text = helm_render().replace("\n", "\r\n")
    result = preview("-f", "-", "--diff", stdin=text)
    assert result.returncode == 0 and "normalised" not in result.stdout
    added = [line for line in result.stdout.split("\n") if line.startswith("+") and not line.startswith("+++")]
    assert added and all(line.endswith("\r") for line in added)


# The line editor on its own: whatever the layout, edits are exact or refused, and block YAML
# (what helm and kubectl print) is always edited in place.
_KEYS = st.text(alphabet="abcdefgh-./: #'\"", min_size=1, max_size=6)
_SCALARS = st.one_of(st.text(alphabet="ab :#-'\"\n|>{}[]", max_size=8), st.integers(-5, 5), st.booleans(), st.none())
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4), max_leaves=20)


def _mutate(data, value, draw):
    """A random change of the kinds a patch makes: add, replace, remove at any depth."""
    if isinstance(value, dict) and value:
        key = draw(st.sampled_from(sorted(value)))
        action = draw(st.sampled_from(["recurse", "replace", "remove", "add"]))
        if action == "recurse":
            _mutate(data, value[key], draw)
        elif action == "replace":
            value[key] = draw(_VALUES)
        elif action == "remove":
            del value[key]
        else:
            value[draw(_KEYS)] = draw(_VALUES)
    elif isinstance(value, list) and value:
        index = draw(st.integers(0, len(value) - 1))
        action = draw(st.sampled_from(["recurse", "replace", "remove", "insert", "append"]))
        if action == "recurse":
            _mutate(data, value[index], draw)
        elif action == "replace":
            value[index] = draw(_VALUES)
        elif action == "remove":
            del value[index]
        elif action == "insert":
            value.insert(index, draw(_VALUES))
        else:
            value.append(draw(_VALUES))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_KEYS, _VALUES, min_size=1, max_size=5), st.booleans(), st.booleans(), st.data())
def test_line_edits_are_exact_for_any_block_layout(original, indented, comments, data):
    lines = dump_lines(original, indented)
    if comments:
        lines = [f"{line}  # note" if re.fullmatch(r" *(- )*[a-h]+: [a-h0-9]+", line) else line for line in lines]
    text = "# Source: chart/templates/x.yaml\n" + "\n".join(lines) + "\n"
    node = yaml.compose(text)
    assert yaml.safe_load(text) == original
    changed = json.loads(json.dumps(original))
    for _ in range(data.draw(st.integers(1, 3))):
        _mutate(changed, changed, data.draw)
    edits = document_edits(text.split("\n"), node, original, changed)
    if edits is None:
        assert changed == {} or node.flow_style, "block YAML must be edited in place"
        return
    assert yaml.safe_load("\n".join(apply_edits(text.split("\n"), edits))) == changed
