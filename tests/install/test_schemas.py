"""Every rendered manifest is valid for current Kubernetes: strict OpenAPI schemas.

kubernetes-validate ships the Kubernetes JSON schemas; ``strict`` rejects unknown fields, so a
misspelt or misplaced field (e.g. ``matchConditions`` one level too deep) fails here. cert-manager
kinds are not Kubernetes API types: they get a structural check of the fields we rely on.
"""

from __future__ import annotations

import kubernetes_validate
import pytest

from tests.install.conftest import TARGETS, render

#: Kubernetes 1.33 (what the manifests are written for) and the newest schemas shipped.
VERSIONS = sorted({"1.33.0", kubernetes_validate.utils.latest_version()})
CERT_MANAGER_GROUP = "cert-manager.io/"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_rendered_manifests_validate_strictly(target: str, version: str) -> None:
    docs = render(target)
    assert docs, f"{target} renders nothing"
    for doc in docs:
        if doc["apiVersion"].startswith(CERT_MANAGER_GROUP):
            continue  # see test_cert_manager_resources_are_well_formed
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{target}: {name} is invalid for Kubernetes {version}: {error.message} at {list(error.path)}")


def test_validation_rejects_a_broken_webhook_configuration() -> None:
    """The schema check can fail: a misplaced field is caught, so the test above means something."""
    config = next(doc for doc in render("base") if doc["kind"] == "MutatingWebhookConfiguration")
    config["webhooks"][0]["clientConfig"]["service"]["matchConditions"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(config, VERSIONS[0], strict=True)
    config = next(doc for doc in render("base") if doc["kind"] == "MutatingWebhookConfiguration")
    config["webhooks"][0]["sideEffects"] = 7
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(config, VERSIONS[0], strict=True)


def test_every_kind_is_checked() -> None:
    """Nothing rendered escapes both checks: Kubernetes kinds have a schema, others are cert-manager's."""
    for target in TARGETS:
        for doc in render(target):
            if doc["apiVersion"].startswith(CERT_MANAGER_GROUP):
                assert target == "overlays/cert-manager", f"{target} needs cert-manager ({doc['kind']})"
                continue
            # Raises SchemaNotFoundError for a kind unknown to Kubernetes (e.g. a typo in apiVersion).
            kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)


def test_cert_manager_resources_are_well_formed() -> None:
    """Structural check (no cert-manager schemas here): apiVersion, kind and the required spec fields."""
    docs = [d for d in render("overlays/cert-manager") if d["apiVersion"].startswith(CERT_MANAGER_GROUP)]
    assert {d["kind"] for d in docs} == {"Issuer", "Certificate"}
    for doc in docs:
        assert doc["apiVersion"] == "cert-manager.io/v1"
        assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}
        assert doc["metadata"]["name"] and doc["metadata"]["namespace"]
    issuer = next(d for d in docs if d["kind"] == "Issuer")
    # An Issuer has exactly one issuer type.
    types = {"selfSigned", "ca", "acme", "vault", "venafi"}
    assert len(types & set(issuer["spec"])) == 1, issuer["spec"]
    assert set(issuer["spec"]) <= types
    certificate = next(d for d in docs if d["kind"] == "Certificate")
    spec = certificate["spec"]
    assert set(spec) <= {
        "secretName", "dnsNames", "duration", "renewBefore", "privateKey", "usages", "issuerRef",
        "commonName", "ipAddresses", "subject", "secretTemplate", "isCA", "revisionHistoryLimit",
    }, set(spec)
    # Required by the Certificate CRD: secretName and issuerRef.name; and a name to serve.
    assert isinstance(spec["secretName"], str) and spec["secretName"]
    assert spec["issuerRef"]["name"] and spec["issuerRef"]["kind"] in ("Issuer", "ClusterIssuer")
    assert spec["issuerRef"].get("group", "cert-manager.io") == "cert-manager.io"
    assert spec["dnsNames"] and all(isinstance(name, str) for name in spec["dnsNames"])
    assert spec["privateKey"]["algorithm"] in ("RSA", "ECDSA", "Ed25519")
    assert spec["privateKey"].get("rotationPolicy", "Always") in ("Always", "Never")
    allowed_usages = {"server auth", "client auth", "digital signature", "key encipherment"}
    assert set(spec["usages"]) <= allowed_usages
    for field in ("duration", "renewBefore"):
        assert spec[field].endswith("h") and int(spec[field][:-1]) > 0
    assert int(spec["duration"][:-1]) > int(spec["renewBefore"][:-1])
