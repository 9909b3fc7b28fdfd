"""The README's install sections name what the manifests and the code actually use."""

from __future__ import annotations

import re

from tests.install.conftest import REPO, TARGETS
from webhook.core import conventions

DOC = (REPO / "README.md").read_text()


def test_every_kustomize_path_in_the_doc_exists() -> None:
    paths = set(re.findall(r"kubectl (?:apply|delete) -k (manifests/[\w/-]+)", DOC))
    assert {"manifests/overlays/self-signed", "manifests/overlays/cert-manager", "manifests/overlays/audit-only"} <= paths
    for path in paths:
        if not path.endswith("/"):  # manifests/overlays/<overlay>
            assert path.removeprefix("manifests/") in TARGETS, path


def test_emergency_and_uninstall_lines_name_the_real_objects() -> None:
    line = (f"kubectl delete mutatingwebhookconfiguration/{conventions.MUTATING_WEBHOOK_CONFIGURATION} "
            f"validatingwebhookconfiguration/{conventions.VALIDATING_WEBHOOK_CONFIGURATION}")
    assert DOC.count(line) >= 2  # emergency and uninstall
    assert "plane-guard.io/inject-" in DOC and conventions.INJECT == "plane-guard.io/inject"
    assert conventions.TLS_SECRET in DOC and f"-n {conventions.SERVICE_NAMESPACE}" in DOC


def test_label_commands_use_the_namespace_modes() -> None:
    modes = set(re.findall(re.escape(conventions.INJECT) + r"=(\w+)", DOC))
    assert modes == set(conventions.NAMESPACE_MODES)


def test_opt_out_values_in_the_doc_are_the_code_ones() -> None:
    sentence = re.search(r'`plane-guard\.io/inject: "(\w+)"` \(also ([^)]*)\)', DOC)
    assert sentence
    values = {sentence.group(1), *re.findall(r"`(\w+)`", sentence.group(2))}
    assert values == conventions.OPT_OUT_VALUES


def test_status_annotation_and_audit_key() -> None:
    assert conventions.STATUS_ANNOTATION in DOC
    assert "audit.mutate.plane-guard.io/would-change" in DOC
