"""Offline preview: what the webhook would do to manifests, without a cluster.

Runs the same ``mutate_pod`` as the webhook on Pods and on the pod templates of workload kinds,
so an operator can review the change before opting a namespace in. Input is read the way
``kubectl -f`` reads it (files, directories recursively, ``-`` for stdin; ``kind: List``
expanded; ``-n`` is the namespace of objects that name none), see ``preview_source``.

Outputs: the mutated YAML (normalised by PyYAML); ``--diff``, a unified diff against the user's
own lines (``preview_diff`` explains how, and when it falls back to normalised YAML and says
so); ``--patch``, the webhook's RFC 6902 patch for every object that carries a pod, labelled
with kind, namespace, name and place. A summary goes to stderr.

The mutated YAML and the diff show the manifest as written, changed. ``--patch`` is another
thing: the patch the webhook returns for the pods created from the object, which the API server
hands over with the ServiceAccount token already added (``preview_admitted``), so the patch is
computed on that pod and each entry says, in ``appliesTo``, what it applies to.

Exit 0 when at least one Kubernetes object was previewed; exit 2, with a message and no
output, when nothing could be: unreadable or binary input, YAML that does not parse, no
objects at all, an object in another namespace than ``-n``, an invalid policy.
"""

from __future__ import annotations

import bisect
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jsonpointer
import yaml

from webhook.core.mutation import Outcome, apply_patch, as_map, mutate_pod
from webhook.core.policy import Policy, load_or_report
from webhook.ops.preview_admitted import Accounts, admitted, service_accounts
from webhook.ops.preview_diff import Headers, apply_edits, document_edits, dump_lines, editable, has_aliases, unified
from webhook.ops.preview_source import RENDER_HINT, STDIN, Document, InputError, Source, parse, read_sources, template_warning

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
    """One Kubernetes object: where it is, its pod (template), and what the webhook decided."""

    document: Document
    pointer: str
    original: dict[str, Any]
    namespace: str | None
    template: str | None
    outcome: Outcome | None
    #: The patch on the manifest's pod (template) as written: what the YAML and diff outputs show.
    patch: list[dict[str, Any]]
    #: The webhook's patch for the pods the API server creates from it, and what that pod carries.
    pod_patch: list[dict[str, Any]] = field(default_factory=list)
    applies_to: str | None = None

    @property
    def name(self) -> str:
        metadata = as_map(self.original.get("metadata"))
        name, generate = metadata.get("name"), metadata.get("generateName")
        if isinstance(name, str) and name:
            return name
        return f"{generate}(generated)" if isinstance(generate, str) and generate else "(unnamed)"

    @property
    def label(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.original['kind']} {where}{self.name}"

    @property
    def line(self) -> int:
        """0-based line where the object starts in its source."""
        node = _node_at(self.document.node, self.pointer)
        return node.start_mark.line if node is not None else self.document.line

    @property
    def place(self) -> str:
        return f"{self.document.source.name}:{self.line + 1}"

    def document_patch(self) -> list[dict[str, Any]]:
        """The patch as operations on the whole document (List items and templates included)."""
        return [{**op, "path": self.pointer + (self.template or "") + op["path"]} for op in self.patch]


def _node_at(node: yaml.Node | None, pointer: str) -> yaml.Node | None:
    for part in pointer.split("/")[1:]:
        if isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
        elif isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
        else:
            return None
    return node


def _not_an_object(value: Any) -> str | None:
    """Why a document (or List item) is not a Kubernetes object, or None when it is one."""
    if not isinstance(value, dict):
        kind = {list: "a list", str: "a string", bool: "true or false", int: "a number", float: "a number"}.get(type(value), "a value")
        return f"{kind}, not a Kubernetes object"
    missing = [key for key in ("apiVersion", "kind") if not isinstance(value.get(key), str) or not value.get(key)]
    return f"not a Kubernetes object (no {' and no '.join(missing)})" if missing else None


def _objects(value: Any, pointer: str, where: str, notes: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The objects of a document, ``kind: List`` (and ``PodList`` ...) expanded like kubectl does."""
    problem = _not_an_object(value)
    if problem:
        notes.append(f"{where} is {problem}; passed through unchanged")
        return
    if value["kind"].endswith("List") and isinstance(value.get("items"), list):
        for index, item in enumerate(value["items"]):
            yield from _objects(item, f"{pointer}/items/{index}", f"{where} {value['kind']} item {index + 1}", notes)
        return
    yield pointer, value


def describe(outcome: Outcome | None, mode: str) -> list[str]:
    """How the webhook treats one pod (template): a summary, then indented details."""
    if mode == "none":
        return ["unchanged: the namespace is not opted in"]
    if outcome is None:
        return ["no pod template; unchanged"]
    if not outcome.matched:
        return [f"unchanged ({outcome.reasons[0] if outcome.reasons else 'no Plane container'})"] + [
            f"  {note}" for note in outcome.notes
        ]
    roles = ", ".join(f"{c}={r}" for c, r in outcome.roles.items())
    verb = "would change" if mode == "audit" else "changes"
    lines = [f"roles {roles}; {verb} {len(outcome.changes)}: {', '.join(outcome.changes) or '-'}"]
    lines += [f"  {line}" for line in _decided_at_start(outcome.decided_at_start)]
    lines += [f"  reason: {reason}" for reason in outcome.reasons]
    lines += [f"  note: {note}" for note in outcome.notes]
    lines += [f"  warning: {warning}" for warning in outcome.warnings]
    return lines


def _decided_at_start(decided: tuple[tuple[str, str, str], ...]) -> list[str]:
    """The settings left to the start, grouped per container and mode, as sentences to check."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for container, variable, mode in decided:
        grouped.setdefault((container, mode), []).append(variable)
    meaning = {
        "keep": "the container's own value from env or envFrom wins, else the policy's",
        "replace": "the policy's value replaces the container's own, and the container logs what it replaced",
    }
    return [
        f"decided at container start in {container} ({mode}: {meaning[mode]}): {', '.join(variables)}"
        for (container, mode), variables in grouped.items()
    ]


def preview_object(
    document: Document,
    pointer: str,
    value: dict[str, Any],
    policy: Policy,
    mode: str,
    namespace: str | None,
    accounts: Accounts | None = None,
) -> Previewed:
    template = TEMPLATE_PATHS.get(value["kind"])
    pod = jsonpointer.resolve_pointer(value, template, None) if template is not None else None
    if pod is None or mode == "none":
        return Previewed(document, pointer, value, namespace, template if pod is not None else None, None, [])
    # A template's pods will belong to this object (a Deployment's through its ReplicaSet).
    owner = as_map(value.get("metadata")).get("name") if value["kind"] != "Pod" else None
    workload = owner if isinstance(owner, str) else None
    outcome = mutate_pod(pod, policy, workload=workload)
    if mode != "enabled":
        return Previewed(document, pointer, value, namespace, template, outcome, [])
    # The pod the webhook receives carries the ServiceAccount token: its patch appends to that.
    pod_as_admitted = admitted(pod, namespace, accounts or {})
    pod_patch = mutate_pod(pod_as_admitted.pod, policy, workload=workload).patch
    whose = "this pod" if value["kind"] == "Pod" else "each pod created from it"
    applies_to = f"{whose} as the API server hands it to the webhook: {pod_as_admitted.why}"
    return Previewed(document, pointer, value, namespace, template, outcome, outcome.patch, pod_patch, applies_to)


def _namespace(value: dict[str, Any], given: str | None, where: str) -> str | None:
    own = as_map(value.get("metadata")).get("namespace")
    if not isinstance(own, str) or not own:
        return given
    if given and own != given:
        raise InputError(
            f"{where}: {value['kind']} {own}/{as_map(value.get('metadata')).get('name')} names namespace {own}, "
            f"but -n {given} was given (kubectl would refuse it too): pass -n {own}, or leave -n out"
        )
    return own


@dataclass
class Run:
    """Everything read and decided, before anything is printed."""

    sources: list[Source]
    documents: list[Document]
    results: list[Previewed]
    notes: list[str]

    def mutated(self, document: Document) -> Any:
        ops = [op for r in self.results if r.document is document for op in r.document_patch()]
        return apply_patch(document.data, ops) if ops else document.data


def _nothing_to_preview(sources: list[Source], documents: list[Document]) -> InputError:
    names = ", ".join(s.name for s in sources)
    if all(not s.text.strip() for s in sources):
        after_pipe = (
            " (if it came from a pipe, the command before it failed or printed nothing: helm template prints its errors above)"
            if any(s.name == STDIN for s in sources)
            else ""
        )
        return InputError(f"{names} {'is' if len(sources) == 1 else 'are'} empty: nothing to preview{after_pipe}")
    if all(d.data is None for d in documents):
        return InputError(f"{names} holds only comments and empty documents: nothing to preview")
    return InputError(f"no Kubernetes objects in {names} (no document has apiVersion and kind): preview reads rendered manifests; {RENDER_HINT}")


@dataclass(frozen=True)
class PreviewOptions:
    """What ``plane-guard preview`` is asked (the command line's options of the same names)."""

    filename: tuple[str, ...]
    policy: str | None = None
    diff: bool = False
    patch: bool = False
    namespace: str | None = None
    namespace_label: str = "enabled"


def load(options: PreviewOptions, policy: Policy) -> Run:
    sources, notes = read_sources(options.filename, sys.stdin.buffer)
    documents = [d for source in sources for d in parse(source)]
    notes += [w for w in map(template_warning, sources) if w]
    found = []
    for document in documents:
        if document.data is None:
            notes.append(f"{document.reference()} is empty; skipped")
            continue
        for pointer, value in _objects(document.data, "", document.reference(), notes):
            found.append((document, pointer, value, _namespace(value, options.namespace, document.reference())))
    # A ServiceAccount anywhere in the input tells whether its pods get the token.
    accounts = service_accounts([(namespace, value) for _, _, value, namespace in found])
    results = [
        preview_object(document, pointer, value, policy, options.namespace_label, namespace, accounts)
        for document, pointer, value, namespace in found
    ]
    if not results:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        raise _nothing_to_preview(sources, documents)
    return Run(sources, documents, results, notes)


#: What ``--patch`` prints applies to (said on stderr, since a patch applied elsewhere fails or drops data).
PATCH_APPLIES_TO = (
    "--patch: each patch is the webhook's answer for a pod as the API server hands it over, after the "
    "ServiceAccount admission plugin added the token volume kube-api-access-* and its mounts; it applies to that "
    "pod, not to the manifest as written (each entry's appliesTo says which). A ServiceAccount that is not in the "
    "input is assumed to leave automountServiceAccountToken on: if yours turns it off, set "
    "automountServiceAccountToken: false on the pod template or pass the ServiceAccount with -f"
)


def _patches(run: Run) -> list[dict[str, Any]]:
    entries = []
    for r in run.results:
        if r.template is None:
            continue
        entry = {"kind": r.original["kind"], "namespace": r.namespace, "name": r.name, "source": r.place}
        entry["pod"] = r.template
        if r.applies_to is not None:
            entry["appliesTo"] = r.applies_to
        entry["patch"] = list(r.pod_patch)
        entries.append(entry)
    return entries


def _heading(run: Run, source: Source) -> Callable[[int], str]:
    marks = sorted((r.line, r.label) for r in run.results if r.document.source is source)
    starts = [line for line, _ in marks]

    def heading(line: int) -> str:
        at = bisect.bisect_right(starts, line) - 1
        return marks[at][1] if at >= 0 else ""

    return heading


def _fallback_reason(document: Document) -> str:
    if not editable(document.source.text):
        return "the file breaks lines with CR, NEL, LS or PS"
    if getattr(document.node, "flow_style", None):
        return "it is JSON or flow-style YAML"
    if has_aliases(document.node):
        return "it uses YAML anchors and aliases"
    return "its layout (merge keys, duplicate keys ...) could not be edited line by line"


def _diff(run: Run) -> tuple[list[str], list[str]]:
    """Diff lines against each file's own text; normalised YAML only where that cannot be done."""
    out: list[str] = []
    notes: list[str] = []
    for source in run.sources:
        lines = source.text.split("\n")
        in_place = editable(source.text)
        edits, fallbacks = [], []
        for document in (d for d in run.documents if d.source is source and d.data is not None):
            mutated = run.mutated(document)
            found = document_edits(lines, document.node, document.data, mutated) if in_place else None
            if found is None:
                fallbacks.append((document, mutated))
            else:
                edits += found
        before, after = lines, apply_edits(lines, edits)
        if before[-1:] == after[-1:] == [""]:
            before, after = before[:-1], after[:-1]
        out += unified(before, after, Headers(source.name, f"{source.name}\t(as plane-guard would admit it)"), _heading(run, source))
        for document, mutated in fallbacks:
            if mutated == document.data:
                continue
            labels = [r.label for r in run.results if r.document is document]
            title = labels[0] if len(labels) == 1 else f"{document.data.get('kind')} of {len(labels)} objects"
            notes.append(f"{document.reference()}: {_fallback_reason(document)}, so its diff compares normalised YAML")
            where = f"{source.name}\tdocument {document.index} ({title}), normalised YAML"
            headers = Headers(f"{where}: line numbers count in this document, not in the file", f"{where}, as plane-guard would admit it")
            out += unified(dump_lines(document.data), dump_lines(mutated), headers, lambda _: title)
    return out, notes


def _dump(documents: list[Any]) -> str:
    return "---\n".join(yaml.safe_dump(d, sort_keys=False, default_flow_style=False) for d in documents)


def preview_command(options: PreviewOptions) -> int:
    """``plane-guard preview``: mutated YAML, ``--diff`` or ``--patch`` on stdout; a summary on stderr."""
    policy = load_or_report(options.policy)
    if policy is None:
        return 2
    try:
        run = load(options, policy)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    mode = options.namespace_label
    if mode == "none":
        namespace = options.namespace or "the namespace"
        print(f"{namespace} is not opted in (label it plane-guard.io/inject=enabled or =audit); nothing changes", file=sys.stderr)
    if options.patch and mode == "enabled":
        print(PATCH_APPLIES_TO, file=sys.stderr)
    for result in run.results:
        first, *details = describe(result.outcome, mode)
        origin = f", # Source: {result.document.helm_source}" if result.document.helm_source and not result.pointer else ""
        print(f"{result.label} ({result.place}{origin}): {first}", *details, sep="\n", file=sys.stderr)

    if options.patch:
        output = json.dumps(_patches(run), indent=2, default=str) + "\n"
    elif options.diff:
        lines, notes = _diff(run)
        run.notes += notes
        output = "".join(lines)
    else:
        output = _dump([run.mutated(d) for d in run.documents if d.data is not None])
    for note in run.notes:
        print(f"note: {note}", file=sys.stderr)
    sys.stdout.write(output)
    return 0

