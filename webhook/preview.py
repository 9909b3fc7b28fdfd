"""Offline preview: what the webhook would do to manifests, without a cluster.

Runs the same ``mutate_pod`` as the webhook on Pods and on the pod templates of workload kinds,
so an operator can review the change (or the exact RFC 6902 patch) before opting a namespace in.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from webhook.mutation import Outcome, apply_patch, mutate_pod
from webhook.policy import Policy, load_or_report

#: Where each kind keeps the pod (template) the webhook would see, as a JSON pointer.
TEMPLATE_PATHS = {
    "Pod": "",
    "Deployment": "/spec/template",
    "StatefulSet": "/spec/template",
    "DaemonSet": "/spec/template",
    "ReplicaSet": "/spec/template",
    "ReplicationController": "/spec/template",
    "Job": "/spec/template",
    "CronJob": "/spec/jobTemplate/spec/template",
}


@dataclass(frozen=True)
class Previewed:
    """One document: as given, as the webhook would leave it, and why."""

    original: Any
    mutated: Any
    outcome: Outcome | None
    patch: list[dict[str, Any]]

    @property
    def label(self) -> str:
        if not isinstance(self.original, dict):
            return "(not an object)"
        name = (self.original.get("metadata") or {}).get("name") or "(unnamed)"
        return f"{self.original.get('kind', '(no kind)')}/{name}"


def _resolve(document: Any, pointer: str) -> Any:
    node = document
    for part in pointer.split("/")[1:]:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def preview_document(document: Any, policy: Policy, apply: bool = True) -> Previewed:
    """Mutate the document's pod or pod template; ``apply=False`` reports without changing."""
    pointer = TEMPLATE_PATHS.get(document.get("kind")) if isinstance(document, dict) else None
    template = _resolve(document, pointer) if pointer is not None else None
    if template is None:
        return Previewed(document, document, None, [])
    outcome = mutate_pod(template, policy)
    patch = [{**op, "path": pointer + op["path"]} for op in outcome.patch]
    mutated = apply_patch(document, patch) if apply and patch else document
    return Previewed(document, mutated, outcome, patch)


def _texts(filename: str) -> Iterator[str]:
    if filename == "-":
        yield sys.stdin.read()
        return
    path = Path(filename)
    files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json")) if path.is_dir() else [path]
    for file in files:
        yield file.read_text(encoding="utf-8")


def read_documents(filename: str) -> list[Any]:
    """Every document of a YAML or JSON stream, file or directory (like ``kubectl -f``);
    ``kind: List`` is expanded into its items."""
    documents: list[Any] = []
    for document in (d for text in _texts(filename) for d in yaml.safe_load_all(text)):
        if document is None:
            continue
        if isinstance(document, dict) and document.get("kind") == "List" and isinstance(document.get("items"), list):
            documents.extend(document["items"])
        else:
            documents.append(document)
    return documents


def _dump(documents: list[Any]) -> str:
    return "---\n".join(yaml.safe_dump(d, sort_keys=False, default_flow_style=False) for d in documents)


def _report(results: list[Previewed], mode: str) -> Iterator[str]:
    for result in results:
        outcome = result.outcome
        if outcome is None:
            yield f"{result.label}: no pod template; unchanged"
            continue
        roles = ", ".join(f"{c}={r}" for c, r in outcome.roles.items()) or "none"
        verb = "would change" if mode == "audit" else "changes"
        yield f"{result.label}: roles {roles}; {verb} {len(outcome.changes)}: {', '.join(outcome.changes) or '-'}"
        for reason in outcome.reasons:
            yield f"  reason: {reason}"
        for warning in outcome.warnings:
            yield f"  warning: {warning}"


def preview_command(args: argparse.Namespace) -> int:
    """``plane-guard preview``: mutated YAML, ``--diff`` or ``--patch`` on stdout; a summary on stderr."""
    policy = load_or_report(args.policy)
    if policy is None:
        return 2
    try:
        documents = read_documents(args.filename)
    except OSError as error:
        print(f"cannot read {args.filename}: {error.strerror}", file=sys.stderr)
        return 1
    except yaml.YAMLError as error:
        print(f"{args.filename} is not valid YAML or JSON: {error}", file=sys.stderr)
        return 1
    mode = args.namespace_label
    if mode == "none":
        namespace = args.namespace or "the namespace"
        print(f"{namespace} is not opted in (label it plane-guard.io/inject=enabled or =audit); nothing changes", file=sys.stderr)
    results = [
        preview_document(d, policy, apply=mode == "enabled") if mode != "none" else Previewed(d, d, None, [])
        for d in documents
    ]
    if mode != "none":
        for line in _report(results, mode):
            print(line, file=sys.stderr)

    if args.patch:
        pods = [r for r in results if isinstance(r.original, dict) and r.original.get("kind") == "Pod"]
        if len(results) != 1 or len(pods) != 1:
            print("--patch needs exactly one Pod document (the webhook patches Pods, not templates)", file=sys.stderr)
            return 2
        print(json.dumps(pods[0].patch if mode == "enabled" else [], indent=2))
        return 0
    before, after = _dump([r.original for r in results]), _dump([r.mutated for r in results])
    if args.diff:
        sys.stdout.writelines(difflib.unified_diff(before.splitlines(True), after.splitlines(True), "original", "mutated"))
    else:
        sys.stdout.write(after)
    return 0
