"""Read Kubernetes manifests (YAML or JSON, multi-document, ``kind: List``) into documents.

Why not ``yaml.safe_load_all``: we need the position of every field (the line of each node) to
point a user at the problem the way a linter does (``file:LINE:``), and PyYAML silently keeps
the *last* of two duplicate keys, which ``kubectl apply --validate=strict`` refuses. The loader
here composes node by node, so each document keeps its node tree (for the line of a field) and a
duplicate key is a syntax problem of that document. JSON files are composed by the same YAML
reader for their lines (JSON being YAML's flow style), after ``json`` parsed them.

A file that cannot be read raises :class:`ManifestIOError` (a usage/IO error, exit 2); a file
that cannot be parsed yields a :class:`Problem` for the document where parsing stopped.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

__all__ = [
    "MANIFEST_SUFFIXES",
    "Document",
    "ManifestIOError",
    "Problem",
    "expand_paths",
    "read_documents",
]

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "-"


class ManifestIOError(Exception):
    """A path does not exist or cannot be read (exit code 2, not a manifest problem)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem, rendered ``file:LINE: field.path: message (document N)``.

    The line is the 1-based line of the offending field (or of its nearest parent that exists),
    where editors and CI annotations expect it; the message says the fix.
    """

    location: str
    """``file:LINE`` for a document, or a free label (``require-complete:prod/acme``)."""
    field: str
    message: str
    rule: str
    """Stable name of the failed rule (``syntax``, ``schema``, ``duplicate-identity``…)."""
    file: str | None = None
    document: int | None = None
    line: int | None = None
    extra: dict[str, Any] = dc_field(default_factory=dict)

    def __str__(self) -> str:
        where = f" (document {self.document})" if self.document is not None else ""
        return f"{self.location}: {self.field}: {self.message}{where}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "document": self.document,
            "line": self.line,
            "field": self.field,
            "message": self.message,
            "rule": self.rule,
            "text": str(self),
            **self.extra,
        }


@dataclass(frozen=True, slots=True)
class Document:
    """One object of a manifest file; ``prefix`` is ``items[3].`` for an item of a ``List``."""

    file: str
    index: int
    body: Any
    node: yaml.Node | None = None
    prefix: str = ""

    @property
    def location(self) -> str:
        """``file:LINE`` of the document's first line (where an editor should open it)."""
        return f"{self.file}:{self.line_of('')}"

    def line_of(self, field_path: str) -> int:
        """1-based line of ``field_path`` (``spec.redis.url``) or its nearest existing parent.

        Line 1 when the document has no node tree (a JSON file YAML cannot compose).
        """
        node = self.node
        if node is None:
            return 1
        best = node.start_mark.line + 1
        for part in field_path.split("."):
            if not part:
                continue
            child = _child(node, part)
            if child is None:
                break
            node = child
            best = node.start_mark.line + 1
        return best

    def problem(self, field_path: str, message: str, rule: str) -> Problem:
        path = (
            f"{self.prefix}{field_path}" if field_path else self.prefix.rstrip(".") or "(document)"
        )
        line = self.line_of(field_path)
        return Problem(
            location=f"{self.file}:{line}",
            field=path,
            message=message,
            rule=rule,
            file=self.file,
            document=self.index,
            line=line,
        )


def _child(node: yaml.Node, part: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == part:
                return value  # type: ignore[no-any-return]
    if isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
        return node.value[int(part)]  # type: ignore[no-any-return]
    return None


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (as ``kubectl --validate=strict`` does)."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                key = key_node.value
                if key in seen:
                    raise ConstructorError(
                        None,
                        None,
                        f"duplicate key {key!r}",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[arg-type]


def _yaml_error(exc: yaml.YAMLError) -> tuple[str, int | None]:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = exc.problem or "invalid YAML"
        return f"{what} at line {mark.line + 1}, column {mark.column + 1}", mark.line + 1
    return str(exc), None


def expand_paths(paths: Iterable[str]) -> list[tuple[str, Path | None]]:
    """Files to read, as (display name, path); directories are walked (sorted, hidden skipped).

    ``-`` is standard input (path ``None``). Raises :class:`ManifestIOError` for a missing path.
    """
    out: list[tuple[str, Path | None]] = []
    for raw in paths:
        if raw == STDIN:
            out.append((STDIN, None))
            continue
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in MANIFEST_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            out.extend((str(p), p) for p in found)
        elif path.is_file():
            out.append((str(path), path))
        else:
            raise ManifestIOError(f"{raw}: no such file or directory")
    return out


def _read_text(display: str, path: Path | None) -> str:
    try:
        if path is None:
            return sys.stdin.read()
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestIOError(f"{display}: cannot read: {exc}") from exc


def read_documents(display: str, path: Path | None) -> Iterator[Document | Problem]:
    """The documents of one file, then (if parsing stopped early) the syntax problem."""
    text = _read_text(display, path)
    if path is not None and path.suffix.lower() == ".json":
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            yield Problem(
                location=f"{display}:{exc.lineno}",
                field="(json)",
                message=f"{exc.msg} at line {exc.lineno}, column {exc.colno}; fix the JSON syntax",
                rule="syntax",
                file=display,
                document=0,
                line=exc.lineno,
            )
            return
        yield from _expand(Document(display, 0, body, _json_node(text)))
        return
    loader = _StrictLoader(text)
    index = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            body = loader.construct_document(node)
            if body is not None:
                yield from _expand(Document(display, index, body, node))
            index += 1
    except yaml.YAMLError as exc:
        message, line = _yaml_error(exc)
        fix = (
            "keep only one (kubectl refuses duplicate fields)"
            if message.startswith("duplicate key")
            else "fix the YAML syntax"
        )
        yield Problem(
            location=f"{display}:{line or 1}",
            field="(yaml)",
            message=f"{message}; {fix} (documents after this one were not read)",
            rule="syntax",
            file=display,
            document=index,
            line=line,
        )
    finally:
        loader.dispose()


def _json_node(text: str) -> yaml.Node | None:
    """The node tree of a JSON document, for line numbers (JSON is YAML flow style, mostly)."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:  # e.g. a tab YAML refuses: lines fall back to 1
        return None


def _expand(doc: Document) -> Iterator[Document]:
    """A ``kind: List`` (``kubectl get -o yaml``) is its items, each prefixed ``items[i].``."""
    body = doc.body
    if (
        isinstance(body, dict)
        and isinstance(body.get("kind"), str)
        and body["kind"].endswith("List")
        and isinstance(body.get("items"), list)
    ):
        items_node = _child(doc.node, "items") if doc.node is not None else None
        for i, item in enumerate(body["items"]):
            node = _child(items_node, str(i)) if items_node is not None else None
            yield Document(doc.file, doc.index, item, node, prefix=f"items[{i}].")
        return
    yield doc
