"""Unified diffs whose hunks point at the user's own lines.

Why not diff two YAML dumps: PyYAML cannot round-trip a file, so dumping the original and the
mutated object would renumber and reformat every line (quoting, indentation, comments, helm's
``# Source:`` lines gone), and a hunk's line numbers would point nowhere in the user's file.

So each change is written into the user's text as a small line edit, placed with the positions
PyYAML's composer records for every node: add keys after a mapping's last entry, insert sequence
items before or after existing ones, remove or replace one entry or item, at the indentation the
text already uses. A change that cannot be placed that way moves up to the enclosing entry. The
edited document is then parsed again and must equal the mutated object; only then are its edits
used. Hunks therefore carry the file's real line numbers, and their context lines are lines of
the file. A document that fails that check (JSON and other flow style, anchors, unusual line
breaks) gets a separate diff of normalised YAML whose header says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

import yaml

Edit = tuple[int, int, list[str]]  # replace lines [start, end) with these
_ENTRY_PREFIX = re.compile(r" *(?:- +)*")
_LINE_BREAKS = ("\r", "\x85", "\u2028", "\u2029")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_WIDTH = 1 << 20


class _Cannot(Exception):
    """This change cannot be written into the text in place."""


class _IndentedDumper(yaml.SafeDumper):
    """Sequences indented under their key (``key:\\n  - a``), as helm charts write them."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


def dump_lines(value: Any, indented_sequences: bool = False) -> list[str]:
    dumper = _IndentedDumper if indented_sequences else yaml.SafeDumper
    text = yaml.dump(value, Dumper=dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=_WIDTH)
    return text.rstrip("\n").split("\n")


def _block(node: yaml.Node) -> bool:
    return isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.flow_style is not True and bool(node.value)


def _fingerprint(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


class _Editor:
    """Line edits that turn one document's text into the mutated object's."""

    def __init__(self, lines: list[str], first: int):
        self.lines = lines
        self.indented = False
        self.eol = "\r" if lines[first].endswith("\r") else ""
        self.edits: list[Edit] = []

    def line(self, index: int) -> str:
        return self.lines[index] if 0 <= index < len(self.lines) else ""

    def end(self, node: yaml.Node) -> tuple[int, int]:
        """Line and column where the node's own text ends (trailing comments and blank lines excluded)."""
        if _block(node):
            last = node.value[-1]
            return self.end(last[1] if isinstance(node, yaml.MappingNode) else last)
        mark = node.end_mark
        line = mark.line if self.line(mark.line)[: mark.column].strip() else mark.line - 1
        if isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
            while line > node.start_mark.line and not self.line(line).strip():
                line -= 1
            return line, len(self.line(line))
        return line, mark.column if line == mark.line else len(self.line(line))

    def last_line(self, node: yaml.Node) -> int:
        """The node's last line, provided nothing but a comment follows it there."""
        line, column = self.end(node)
        rest = self.line(line)[column:].strip()
        if rest and not rest.startswith("#"):
            raise _Cannot
        return line

    def dash(self, item: yaml.Node) -> int:
        """Column of the ``-`` that opens a block sequence item."""
        text, column = self.line(item.start_mark.line), item.start_mark.column - 1
        while column >= 0 and text[column] == " ":
            column -= 1
        if column < 0 or text[column] != "-":
            raise _Cannot
        return column

    def _lines_at(self, column: int, first_prefix: str, value: Any) -> list[str]:
        dumped = [line + self.eol for line in dump_lines(value, self.indented)]
        return [first_prefix + dumped[0], *(" " * column + line for line in dumped[1:])]

    # One node: recurse into block collections, otherwise let the caller replace the entry.
    def value(self, node: yaml.Node, old: Any, new: Any) -> None:
        if old == new:
            return
        if isinstance(node, yaml.MappingNode) and _block(node) and isinstance(old, dict) and isinstance(new, dict) and new:
            self.mapping(node, old, new)
        elif isinstance(node, yaml.SequenceNode) and _block(node) and isinstance(old, list) and isinstance(new, list) and new:
            self.sequence(node, old, new)
        else:
            raise _Cannot

    def _try(self, attempt: Callable[[], None], fallback: Callable[[], None]) -> None:
        mark = len(self.edits)
        try:
            attempt()
        except _Cannot:
            del self.edits[mark:]
            fallback()

    def mapping(self, node: yaml.MappingNode, old: dict, new: dict) -> None:
        if len(node.value) != len(old):
            raise _Cannot  # duplicate or merge keys: the text and the data disagree
        for key, (key_node, value_node) in zip(old, node.value):
            if key not in new:
                self.remove(key_node.start_mark.line, key_node.start_mark.column, value_node)
            elif old[key] != new[key]:
                self._try(
                    lambda: self.value(value_node, old[key], new[key]),
                    lambda: self.replace(key_node.start_mark.line, key_node.start_mark.column, value_node, {key: new[key]}),
                )
        added = {key: value for key, value in new.items() if key not in old}
        if added:
            after = self.last_line(node) + 1
            column = node.value[0][0].start_mark.column
            self.edits.append((after, after, self._lines_at(column, " " * column, added)))

    def sequence(self, node: yaml.SequenceNode, old: list, new: list) -> None:
        if len(node.value) != len(old):
            raise _Cannot
        column = self.dash(node.value[0])
        matcher = SequenceMatcher(None, [_fingerprint(i) for i in old], [_fingerprint(i) for i in new], autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                continue
            if tag == "replace" and i2 - i1 == j2 - j1:
                for i, j in zip(range(i1, i2), range(j1, j2)):
                    item = node.value[i]
                    self._try(
                        lambda: self.value(item, old[i], new[j]),
                        lambda: self.replace(item.start_mark.line, self.dash(item), item, [new[j]]),
                    )
                continue
            for item in node.value[i1:i2]:
                self.remove(item.start_mark.line, self.dash(item), item)
            if j2 > j1:
                if i1 < len(node.value):
                    at = node.value[i1].start_mark.line
                    if self.line(at)[: self.dash(node.value[i1])].strip():
                        raise _Cannot
                else:
                    at = self.last_line(node) + 1
                self.edits.append((at, at, self._lines_at(column, " " * column, new[j1:j2])))

    def replace(self, line: int, column: int, value_node: yaml.Node, replacement: Any) -> None:
        """Rewrite one entry (``{key: value}``) or item (``[value]``) starting at ``line``/``column``."""
        prefix = self.line(line)[:column]
        if not _ENTRY_PREFIX.fullmatch(prefix):
            raise _Cannot
        last = self.last_line(value_node)
        self.edits.append((line, last + 1, self._lines_at(column, prefix, replacement)))

    def remove(self, line: int, column: int, value_node: yaml.Node) -> None:
        if self.line(line)[:column].strip():
            raise _Cannot  # shares its line with the enclosing item's dash
        self.edits.append((line, self.last_line(value_node) + 1, []))


def apply_edits(lines: list[str], edits: list[Edit]) -> list[str]:
    out: list[str] = []
    at = 0
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1])):
        if start < at:
            raise _Cannot
        out.extend(lines[at:start])
        out.extend(new)
        at = end
    out.extend(lines[at:])
    return out


def _indented_style(editor: _Editor, node: yaml.Node) -> bool:
    """Whether the document mostly indents block sequences under their key."""
    votes = [0, 0]
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                if isinstance(value, yaml.SequenceNode) and _block(value):
                    try:
                        votes[editor.dash(value.value[0]) > key.start_mark.column] += 1
                    except _Cannot:
                        pass
                stack.append(value)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
    return votes[1] > votes[0]


def has_aliases(node: yaml.Node) -> bool:
    seen: set[int] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            return True
        seen.add(id(current))
        if isinstance(current, yaml.MappingNode):
            stack.extend(n for pair in current.value for n in pair)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
    return False


def document_edits(lines: list[str], node: yaml.Node, old: Any, new: Any) -> list[Edit] | None:
    """Line edits of the file that turn this document into ``new``, checked by parsing the
    result; None when the change cannot be written into this text faithfully."""
    if old == new:
        return []
    if has_aliases(node):
        return None
    editor = _Editor(lines, node.start_mark.line)
    editor.indented = _indented_style(editor, node)
    try:
        editor.value(node, old, new)
        first, last = node.start_mark.line, editor.last_line(node)
        if any(start < first or end > last + 1 for start, end, _ in editor.edits):
            return None
        shifted = [(start - first, end - first, new_lines) for start, end, new_lines in editor.edits]
        edited = "\n".join(apply_edits(lines[first : last + 1], shifted))
        if yaml.load(edited, Loader=_LOADER) != new:
            return None
    except (_Cannot, yaml.YAMLError, RecursionError):
        return None
    return editor.edits


def editable(text: str) -> bool:
    """Whether line numbers can be trusted: PyYAML also breaks lines at CR, NEL, LS and PS."""
    return not any(b in text.replace("\r\n", "\n") for b in _LINE_BREAKS)


def _range(start: int, stop: int) -> str:
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start if length == 0 else start + 1},{length}"


@dataclass(frozen=True)
class Headers:
    old: str
    new: str


def unified(before: list[str], after: list[str], headers: Headers, heading: Callable[[int], str]) -> list[str]:
    """A unified diff; each hunk's heading (after ``@@``, as git prints a function name) names
    what ``heading`` says is at the hunk's first changed line of ``before``."""
    out: list[str] = []
    for group in SequenceMatcher(None, before, after, autojunk=False).get_grouped_opcodes(3):
        if not out:
            out += [f"--- {headers.old}\n", f"+++ {headers.new}\n"]
        first_change = next(i1 for tag, i1, _, _, _ in group if tag != "equal")
        title = heading(first_change)
        out.append(f"@@ -{_range(group[0][1], group[-1][2])} +{_range(group[0][3], group[-1][4])} @@{' ' + title if title else ''}\n")
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                out += [f" {line}\n" for line in before[i1:i2]]
                continue
            out += [f"-{line}\n" for line in before[i1:i2]]
            out += [f"+{line}\n" for line in after[j1:j2]]
    return out
