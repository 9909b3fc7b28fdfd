"""The policy ConfigMap: a copy of the embedded default policy, valid for `plane-guard policy check`."""

from __future__ import annotations

from pathlib import Path

from tests.install.conftest import BASE, INSTALLABLE, REPO, deployment, one, render, run_cli, serve_args

COPY = BASE / "policy" / "policy.yaml"
EMBEDDED = REPO / "webhook" / "core" / "default_policy.yaml"


def test_copy_equals_the_embedded_default() -> None:
    assert COPY.read_bytes() == EMBEDDED.read_bytes(), (
        f"{COPY.relative_to(REPO)} differs from {EMBEDDED.relative_to(REPO)}: copy it again "
        f"(cp {EMBEDDED.relative_to(REPO)} {COPY.relative_to(REPO)})"
    )


def test_policy_check_accepts_the_configmap_policy() -> None:
    result = run_cli("policy", "check", str(COPY))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_policy_check_rejects_a_broken_policy(tmp_path: Path) -> None:
    """The check above can fail: a policy with an unknown role field is refused with exit 2."""
    broken = tmp_path / "policy.yaml"
    broken.write_text(COPY.read_text().replace("wrapEntrypoint: true", "wrapEntrypoint: maybe", 1))
    assert broken.read_text() != COPY.read_text()
    result = run_cli("policy", "check", str(broken))
    assert result.returncode == 2, (result.stdout, result.stderr)


def test_rendered_configmap_carries_the_file_and_is_mounted() -> None:
    for target in ("base", *INSTALLABLE):
        docs = render(target)
        volumes = {v["name"]: v for v in deployment(target)["spec"]["template"]["spec"]["volumes"]}
        name = volumes["policy"]["configMap"]["name"]
        # The generated name carries a content hash: a policy edit rolls the webhook pods.
        assert name.startswith("plane-guard-policy-") and name != "plane-guard-policy"
        configmap = one(docs, "ConfigMap", name)
        key = Path(serve_args(target).policy).name
        assert configmap["data"] == {key: COPY.read_text()}
