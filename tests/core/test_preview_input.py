"""What ``plane-guard preview`` reads, and the clear answer it gives for everything it cannot.

Every run goes through ``preview()``, which fails on any traceback. Exit 2 means nothing was
previewed (and nothing is printed on stdout); notes about skipped documents go to stderr."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.core.preview_fixtures import CHART, IMAGE, documents, helm_documents, helm_render, preview, write_output_dir
from tests.fixtures import golden
from webhook import cli

POD = golden.load_input("api-envfrom-secret")


def _refused(result, *phrases: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


def _chart_sources(folder: Path) -> Path:
    """A chart's source folder: Chart.yaml, values.yaml and templates with ``{{ }}``."""
    (folder / "templates").mkdir(parents=True)
    (folder / "Chart.yaml").write_text(f"apiVersion: v2\nname: {CHART}\nversion: 3.5.1\nappVersion: 3.1.2\n")
    (folder / "values.yaml").write_text("planeVersion: v2.6.3\nservices:\n  api:\n    replicas: 1\n")
    (folder / "templates" / "api.deployment.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  namespace: {{ .Release.Namespace }}\n"
        "  name: {{ .Release.Name }}-api-wl\nspec:\n  replicas: {{ .Values.services.api.replicas | default 1 }}\n"
    )
    return folder


def test_packaged_chart_gets_a_clear_error(tmp_path):
    chart = _chart_sources(tmp_path / CHART)
    archive = tmp_path / f"{CHART}-3.5.1.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(chart, arcname=CHART)
    _refused(preview("-f", str(archive)), f"{archive} is a gzip archive", "helm template")
    _refused(preview("-f", "-", stdin=archive.read_bytes()), "stdin is a gzip archive", "helm template")


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is a binary file"),
        (b"apiVersion: v1\nkind: ConfigMap\ndata:\n  a: caf\xe9\n", "is not UTF-8 text (invalid byte at offset 45)"),
        (b"\xff\xfea\x00p\x00i\x00", "is a binary file"),  # UTF-16
    ],
)
def test_other_binary_files_get_a_clear_error(tmp_path, content, phrase):
    path = tmp_path / "manifest.yaml"
    path.write_bytes(content)
    _refused(preview("-f", str(path)), f"{path} {phrase}")


def test_empty_stdin_after_a_failed_helm_template_is_an_error():
    _refused(preview("-f", "-", stdin=b""), "stdin is empty: nothing to preview", "the command before it failed")
    _refused(preview("-f", "-", stdin="\n  \n"), "stdin is empty")


def test_a_chart_source_folder_is_an_error_that_says_to_render_it(tmp_path):
    chart = _chart_sources(tmp_path / CHART)
    _refused(preview("-f", str(chart)), "holds a helm chart's sources", str(chart / "Chart.yaml"), f"helm template RELEASE {chart}")
    _refused(preview("-f", str(tmp_path)), "holds a helm chart's sources")  # charts one level down too
    _refused(preview("-f", str(chart / "Chart.yaml")), "holds a helm chart's sources")


def test_an_unrendered_template_is_an_error_that_says_to_render_it(tmp_path):
    chart = _chart_sources(tmp_path / CHART)
    _refused(preview("-f", str(chart / "templates")), "is not valid YAML or JSON at line 5", "line 4 looks like an unrendered helm template", "helm template")


def test_yaml_with_no_kubernetes_objects_is_an_error(tmp_path):
    chart = _chart_sources(tmp_path / CHART)
    result = preview("-f", str(chart / "values.yaml"))
    _refused(result, "no Kubernetes objects in", "helm template")
    assert "values.yaml:1 (document 1) is not a Kubernetes object (no apiVersion and no kind)" in result.stderr
    _refused(preview("-f", "-", stdin="---\n# Source: plane/templates/a.yaml\n---\n"), "holds only comments and empty documents")
    _refused(preview("-f", "-", stdin="apiVersion: v1\nkind: List\nitems: []\n"), "no Kubernetes objects")


def test_helm_output_dir_is_read_recursively_in_kubectl_order(tmp_path):
    out = tmp_path / "out"
    files = write_output_dir(out)
    (out / CHART / "NOTES.txt").write_text("Thank you for installing Plane\n")
    result = preview("-f", str(out))
    assert result.returncode == 0, result.stderr
    expected = [d for f in files for d in documents(f.read_text())]
    mutated = documents(result.stdout)
    assert [(d["kind"], d["metadata"]["name"]) for d in mutated] == [(d["kind"], d["metadata"]["name"]) for d in expected]
    assert "plane-redis-wl" in result.stdout and "StatefulSet plane/plane-redis-wl" in result.stderr
    assert f"{out / CHART / 'NOTES.txt'} skipped" in result.stderr
    depth = [str(f.relative_to(out)).count("/") for f in files]
    assert max(depth) >= 4, "the fixture must be nested like helm's output"


def test_a_folder_without_manifests_is_an_error(tmp_path):
    (tmp_path / "plane.tgz").write_bytes(b"\x1f\x8b")
    _refused(preview("-f", str(tmp_path)), "holds no .yaml, .yml, .json files", "plane.tgz", "helm template")


@pytest.mark.parametrize("how", ["missing file", "broken link in a folder", "broken link named directly"])
def test_files_that_cannot_be_read_are_named(tmp_path, how):
    named = tmp_path / "sub" / "api.yaml"
    named.parent.mkdir()
    if how == "missing file":
        target = named
    else:
        named.symlink_to(tmp_path / "gone.yaml")
        target = tmp_path if how == "broken link in a folder" else named
    _refused(preview("-f", str(target)), f"cannot read {named}: No such file or directory")


def test_invalid_yaml_names_the_place_and_never_echoes_the_text(tmp_path):
    path = tmp_path / "render.yaml"
    path.write_text(
        "---\n# Source: plane/templates/app-env.yaml\napiVersion: v1\nkind: Secret\nstringData:\n"
        '  AMQP_URL: "amqp://plane:s3cr3t-pw@plane-rabbitmq/\n  DATABASE_URL: [\n'
    )
    result = preview("-f", str(path))
    _refused(result, f"{path} is not valid YAML or JSON at line 8", "while scanning a quoted scalar (from line 6, column 13)")
    assert "s3cr3t" not in result.stderr
    _refused(preview("-f", "-", stdin="a: b\n\tc: d\n"), "stdin is not valid YAML or JSON at line 2")
    _refused(preview("-f", "-", stdin="apiVersion: v1\nkind: ConfigMap\ndata: {a: \x07}\n"), "control characters are not allowed")
    _refused(preview("-f", "-", stdin="apiVersion: v1\nkind: ConfigMap\ndata:\n  day: 2026-13-45\n"), "stdin:1: document 1 holds a value YAML cannot build")


def test_helm_source_comments_label_the_documents():
    text = helm_render()
    result = preview("-f", "-", stdin=text)
    assert result.returncode == 0, result.stderr
    line = text.split("\n").index("kind: Deployment")  # 0-based line of kind = 1-based line of apiVersion
    assert f"Deployment plane/plane-api-wl (stdin:{line}, # Source: {CHART}/templates/workloads/api.deployment.yaml): roles" in result.stderr
    assert f"ConfigMap plane/plane-app-vars (stdin:3, # Source: {CHART}/templates/config-secrets/app-env.yaml)" in result.stderr


def test_separators_with_no_content_are_noted_and_skipped():
    text = f"---\n---\n# Source: {CHART}/templates/disabled.yaml\n---\n" + yaml.safe_dump(POD) + "---\n"
    result = preview("-f", "-", stdin=text)
    assert result.returncode == 0, result.stderr
    assert documents(result.stdout)[0]["kind"] == "Pod" and len(documents(result.stdout)) == 1
    assert "note: stdin:1 (document 1) is empty; skipped" in result.stderr
    assert f"note: stdin:2 (document 2, # Source: {CHART}/templates/disabled.yaml) is empty; skipped" in result.stderr
    last = text.count("\n")
    assert f"note: stdin:{last} (document 4) is empty; skipped" in result.stderr


def test_documents_that_are_not_objects_are_named_and_passed_through():
    text = "- a\n- b\n---\n42\n---\nreplicas: 1\n---\napiVersion: v1\nkind: ConfigMap\n---\n" + yaml.safe_dump(POD)
    result = preview("-f", "-", stdin=text)
    assert result.returncode == 0, result.stderr
    for line in (
        "stdin:1 (document 1) is a list, not a Kubernetes object; passed through unchanged",
        "stdin:4 (document 2) is a number, not a Kubernetes object",
        "stdin:6 (document 3) is not a Kubernetes object (no apiVersion and no kind)",
        "ConfigMap (unnamed) (stdin:8): no pod template; unchanged",
    ):
        assert line in result.stderr
    assert list(yaml.safe_load_all(result.stdout))[:4] == list(yaml.safe_load_all(text))[:4]
    assert documents(result.stdout)[4]["spec"]["containers"][0]["command"][0] == "/bin/sh"


def test_kind_list_items_are_previewed_and_the_list_is_kept():
    items = [POD, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plane-app-vars"}}, "stray"]
    result = preview("-f", "-", stdin=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    assert result.returncode == 0, result.stderr
    [out] = documents(result.stdout)
    assert out["kind"] == "List" and out["items"][1:] == items[1:]
    assert out["items"][0]["spec"]["containers"][0]["command"][0] == "/bin/sh"
    assert "List item 3 is a string, not a Kubernetes object" in result.stderr
    assert "ConfigMap plane-app-vars (stdin:" in result.stderr


def test_repeated_filenames_are_read_in_order(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.json"
    first.write_text(helm_documents()[0][1])
    second.write_text(json.dumps(POD))
    result = preview("-f", str(second), "-f", str(first))
    assert result.returncode == 0, result.stderr
    assert [d["kind"] for d in documents(result.stdout)] == ["Pod", "ConfigMap"]


def test_a_text_that_parses_but_looks_unrendered_gets_a_note():
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: \"{{ .Release.Name }}-vars\"\n"
    result = preview("-f", "-", stdin=text)
    assert result.returncode == 0
    assert "stdin:4 looks like an unrendered helm template" in result.stderr


def test_stdin_is_read_as_bytes_with_a_bom():
    result = preview("-f", "-", stdin=b"\xef\xbb\xbf" + yaml.safe_dump(POD).encode())
    assert result.returncode == 0, result.stderr
    assert documents(result.stdout)[0]["kind"] == "Pod"


def test_reading_does_not_depend_on_the_working_directory(tmp_path):
    write_output_dir(tmp_path / "out")
    result = preview("-f", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert os.path.join("out", CHART, "templates", "workloads", "api.deployment.yaml") + ":" in result.stderr


_TOKENS = st.sampled_from(
    ["---\n", "# Source: plane/templates/x.yaml\n", "apiVersion: v1\n", "kind: Pod\n", "kind: List\n", "items:\n",
     "metadata:\n", "  name: x\n", "  namespace: plane\n", "spec:\n", "  containers:\n", "  - name: api\n",
     f"    image: {IMAGE}\n", "    command: [./bin/docker-entrypoint-api-ee.sh]\n", "    env: []\n", "- 1\n",
     "  template: {}\n", "kind: Deployment\n", "{{ .Values.x }}\n", "&a x: *a\n", "<<: {a: 1}\n", "\t", " ", ":", "\n",
     "'", '"', "[", "{", "|\n", "2026-13-45\n", "\x07", "\r\n", "\u2028"]
)




@st.composite
def _damaged_render(draw) -> bytes:
    """A helm render with a few lines deleted, repeated or with a token inserted."""
    lines = helm_render().split("\n")
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["delete", "repeat", "insert"]))
        if action == "delete":
            del lines[at]
        elif action == "repeat":
            lines.insert(at, lines[at])
        else:
            lines.insert(at, draw(_TOKENS).rstrip("\n"))
    return "\n".join(lines).encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(_damaged_render(), st.lists(_TOKENS, max_size=40).map("".join).map(str.encode), st.binary(max_size=64)),
    st.sampled_from(["", "--diff", "--patch"]),
)
def test_any_input_gets_an_answer_never_a_traceback(content, output):
    """In-process, so hypothesis can try many inputs: exit 0 or 2, and a message when 2."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "input.yaml"
        path.write_bytes(content)
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = cli.main(["preview", "-f", str(path), *([output] if output else [])])
    assert code in (0, 2)
    if code == 2:
        assert stderr.getvalue().splitlines()[-1].startswith("error: ") and stdout.getvalue() == ""
