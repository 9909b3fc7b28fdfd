"""Manifests for the preview: files, directories (read recursively) and stdin, parsed into
documents that remember where they came from.

Every way a user's input can be unusable (a packaged chart, another binary file, a chart's
source folder, YAML that does not parse, a file that cannot be read) ends in ``InputError``
with a message saying what to do next, never in a traceback. Error messages name a position in
the file but never echo its text: manifests carry Secrets.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import yaml

#: What ``kubectl -f DIR`` reads; other files in a directory are skipped with a note.
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "stdin"
RENDER_HINT = "render the chart first: helm template RELEASE CHART -n NAMESPACE | plane-guard preview -f -"
_GZIP_MAGIC = b"\x1f\x8b"
_HELM_ACTION = re.compile(r"\{\{-?\s*(?:\.|\$|include\b|template\b|if\b|range\b|with\b|end\b|toYaml\b|tpl\b|default\b)")
_HELM_SOURCE = re.compile(r"#\s*Source:\s*(\S.*?)\s*$")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class InputError(Exception):
    """Input that cannot be previewed; the message says why and what to do next."""


@dataclass(frozen=True)
class Source:
    """One file's text (or stdin's), under the name the user knows it by."""

    name: str
    text: str


@dataclass(frozen=True)
class Document:
    """One YAML document of a source, with its composed node (for positions) and its data."""

    source: Source
    index: int
    node: yaml.Node
    data: Any
    line: int
    helm_source: str | None

    @property
    def place(self) -> str:
        """``file:line`` (1-based), as editors and compilers print it."""
        return f"{self.source.name}:{self.line + 1}"

    def reference(self) -> str:
        origin = f", # Source: {self.helm_source}" if self.helm_source else ""
        return f"{self.place} (document {self.index}{origin})"


def _decode(name: str, data: bytes) -> str:
    if data.startswith(_GZIP_MAGIC):
        raise InputError(f"{name} is a gzip archive (a packaged helm chart?), not YAML or JSON: {RENDER_HINT}")
    if b"\x00" in data:
        raise InputError(f"{name} is a binary file, not YAML or JSON: preview reads rendered manifests")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(
            f"{name} is not UTF-8 text (invalid byte at offset {error.start}): preview reads YAML or JSON manifests"
        ) from None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None


def _chart_error(folder: Path, chart: Path) -> InputError:
    return InputError(
        f"{folder} holds a helm chart's sources ({chart}), not rendered manifests: "
        f"render it first: helm template RELEASE {folder} -n NAMESPACE | plane-guard preview -f -"
        " (or helm template ... --output-dir DIR, then preview -f DIR)"
    )


def _walk(folder: Path) -> tuple[list[Path], list[Path]]:
    """Manifest files under ``folder`` in kubectl's order (lexical, depth first), and the others."""

    def fail(error: OSError) -> None:
        raise InputError(f"cannot read {error.filename}: {error.strerror or error}")

    manifests: list[Path] = []
    others: list[Path] = []
    for root, _, names in os.walk(folder, onerror=fail):
        if "Chart.yaml" in names:
            raise _chart_error(folder, Path(root) / "Chart.yaml")
        for name in names:
            path = Path(root) / name
            (manifests if path.suffix.lower() in MANIFEST_SUFFIXES else others).append(path)
    def order(path: Path) -> tuple[str, ...]:
        return path.relative_to(folder).parts

    return sorted(manifests, key=order), sorted(others, key=order)


def read_sources(names: Sequence[str], stdin: BinaryIO) -> tuple[list[Source], list[str]]:
    """The text of every file named (``-`` is stdin), directories expanded; and notes on what
    was skipped."""
    sources: list[Source] = []
    notes: list[str] = []
    for name in names:
        if name == "-":
            sources.append(Source(STDIN, _decode(STDIN, stdin.read())))
            continue
        path = Path(name)
        if path.is_dir():
            manifests, others = _walk(path)
            notes.extend(f"{p} skipped: preview reads {', '.join(MANIFEST_SUFFIXES)} files" for p in others)
            if not manifests:
                archives = [str(p) for p in others if p.name.endswith((".tgz", ".tar.gz"))]
                hint = f" (found {', '.join(archives)}: {RENDER_HINT})" if archives else ""
                raise InputError(f"{path} holds no {', '.join(MANIFEST_SUFFIXES)} files{hint}")
            sources.extend(Source(str(p), _decode(str(p), _read_bytes(p))) for p in manifests)
        elif path.name == "Chart.yaml":
            raise _chart_error(path.parent, path)
        else:
            sources.append(Source(name, _decode(name, _read_bytes(path))))
    return sources, notes


def _template_line(text: str) -> int | None:
    match = _HELM_ACTION.search(text)
    return text.count("\n", 0, match.start()) + 1 if match else None


def _yaml_problem(source: Source, error: yaml.YAMLError) -> InputError:
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = error.problem or error.context or "unreadable"
        if error.context and error.problem and error.context_mark:
            start = error.context_mark
            problem += f" {error.context} (from line {start.line + 1}, column {start.column + 1})"
    else:
        where, problem = "", str(error).split("\n", 1)[0]
    message = f"{source.name} is not valid YAML or JSON{where}: {problem}"
    template = _template_line(source.text)
    if template:
        message += f"; line {template} looks like an unrendered helm template: {RENDER_HINT}"
    return InputError(message)


def _opening(lines: list[str], line: int) -> tuple[int, str | None]:
    """Walk back from a document's first node over comments to its ``---``: the line to show for
    an empty document, and helm's ``# Source:`` path when there is one."""
    helm_source = None
    at = min(line, len(lines)) - 1
    while at >= 0:
        text = lines[at].strip()
        if text.startswith("---"):
            return at, helm_source
        if text and not text.startswith("#"):
            break
        match = _HELM_SOURCE.match(text)
        if match and helm_source is None:
            helm_source = match.group(1)
        at -= 1
    return line, helm_source


def parse(source: Source) -> list[Document]:
    """Every document of the source, empty ones included (their ``data`` is None)."""
    lines = source.text.split("\n")
    documents: list[Document] = []
    loader = _LOADER(source.text)
    try:
        while loader.check_node():
            node = loader.get_node()
            index = len(documents) + 1
            try:
                data = loader.construct_document(node)
            except (ValueError, TypeError, OverflowError) as error:
                raise InputError(
                    f"{source.name}:{node.start_mark.line + 1}: document {index} holds a value YAML cannot build "  # type: ignore[union-attr]
                    f"({type(error).__name__}); quote it if it is meant as text"
                ) from None
            opening, helm_source = _opening(lines, node.start_mark.line)  # type: ignore[union-attr]
            line = opening if data is None else node.start_mark.line  # type: ignore[union-attr]
            documents.append(Document(source, index, node, data, line, helm_source))  # type: ignore[arg-type]
    except yaml.YAMLError as error:
        raise _yaml_problem(source, error) from None
    except RecursionError:
        raise InputError(f"{source.name} is nested too deeply to be a Kubernetes manifest") from None
    finally:
        loader.dispose()
    return documents


def template_warning(source: Source) -> str | None:
    """A note when text that parsed still looks like an unrendered helm template."""
    line = _template_line(source.text)
    return f"{source.name}:{line} looks like an unrendered helm template ({{{{ ... }}}}): {RENDER_HINT}" if line else None
