"""Reading a sync file's YAML (:mod:`.syncfile` validates what is read): the data, the line of
each key and the text of each scalar as written.

The loader refuses YAML aliases (``*name``, and so merge keys ``<<: *name``): a sync file is a
short list written by hand and needs none, while an alias can point at its own ancestor (an
endless structure) or fan out into billions of nodes from a few lines ("billion laughs").
Anchors alone are harmless and allowed. Nesting is bounded too, so no input reaches Python's
recursion limit.
"""

from __future__ import annotations

from typing import Any

import yaml

from regstore.errors import SyncFileError

from .syncfile import MAX_NESTING, Path_, format_path

__all__ = ["compose"]


class _Refused(yaml.MarkedYAMLError):
    """YAML the sync-file loader will not compose (an alias, too deep a nesting)."""


class _SyncFileLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases and with a bounded nesting depth."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            name = getattr(self._next_event(), "anchor", None) or "name"
            raise self._refusal(
                f"YAML aliases (*name) are not allowed in a sync file (*{name}; merge keys "
                f"(<<: *{name}) included): write the value out where it is used"
            )
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                raise self._refusal(f"the YAML is nested more than {MAX_NESTING} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:  # PyYAML's signature
        # The scanner keeps a possible simple key per open '[' or '{' and looks through all of
        # them at every token: 20,000 of them cost 0.4 s (seconds under a memory tracer) before
        # the composer above saw the 65th level. Stopped here, at the same depth, it is 2 ms.
        if self.flow_level >= MAX_NESTING:
            raise _Refused(
                problem=f"the YAML is nested more than {MAX_NESTING} levels deep",
                problem_mark=self.get_mark(),
            )
        super().fetch_flow_collection_start(TokenClass)

    def _next_event(self) -> Any:
        return self.peek_event()  # type: ignore[no-untyped-call]

    def _refusal(self, problem: str) -> _Refused:
        return _Refused(problem=problem, problem_mark=self._next_event().start_mark)


def _compose(text: str) -> tuple[yaml.Node | None, Any]:
    """The node tree of ``text`` (for lines) and the data constructed from it."""
    loader = _SyncFileLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return node, data


def _line_map(node: yaml.Node | None, source: str) -> tuple[dict[Path_, int], dict[Path_, str]]:
    """Map each key path to its 1-based line and each scalar to its text as written; refuse
    duplicate keys (YAML would silently keep the last)."""
    lines: dict[Path_, int] = {}
    scalars: dict[Path_, str] = {}

    def walk(n: yaml.Node | None, path: Path_) -> None:
        if n is None:
            return
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.ScalarNode):
            scalars[path] = str(n.value)
        elif isinstance(n, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in n.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
                child = (*path, key)
                if key in seen:
                    raise SyncFileError(
                        f"{source}:{key_node.start_mark.line + 1}: {format_path(child)}: "
                        "duplicate key"
                    )
                seen.add(key)
                lines[child] = key_node.start_mark.line + 1
                walk(value_node, child)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, (*path, i))

    walk(node, ())
    return lines, scalars


def compose(text: str, source: str) -> tuple[Any, dict[Path_, int], dict[Path_, str]]:
    """The data of the YAML ``text``, the 1-based line of each key path and the text of each
    scalar as written; SyncFileError (naming ``source`` and the line) for text that is not
    YAML, or that the loader refuses."""
    try:
        node, data = _compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        if isinstance(exc, _Refused):
            raise SyncFileError(f"{where}: {problem}") from None
        raise SyncFileError(f"{where}: not valid YAML: {problem}") from None
    lines, scalars = _line_map(node, source)
    return data, lines, scalars
