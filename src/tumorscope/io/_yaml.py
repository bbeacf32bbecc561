"""A bounded, strict YAML reader for the files a user gives (``study.yaml``).

``yaml.safe_load`` builds no Python objects, but it is still not safe for hostile input:
nested aliases (the "billion laughs") expand a 1 KB document into gigabytes, a key listed
twice silently keeps the last value, an unquoted impossible date (``2026-02-30``) raises a
bare ``ValueError`` from inside the loader, and deep nesting raises ``RecursionError``.
:func:`load_yaml` reads a document with all of these bounded or reported:

- the document is at most :data:`MAX_YAML_BYTES` long;
- at most :data:`MAX_YAML_ALIASES` aliases, and the document expanded (every alias counted
  as a copy of what it names) holds at most :data:`MAX_YAML_NODES` nodes; a recursive alias
  is refused;
- a mapping with a key listed twice is refused, naming the key's path and both lines;
- a timestamp that is not a real date or time is kept as the text it was written as, so
  that the caller reports it with the field it belongs to.

Every refusal is a :class:`YamlLimitError` with a message that says what and where.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["MAX_YAML_ALIASES", "MAX_YAML_BYTES", "MAX_YAML_NODES", "YamlLimitError", "load_yaml"]

#: The longest document read (bytes). A study of thousands of subjects fits in a few hundred
#: kB; the bound keeps the pure-Python parser under a few seconds.
MAX_YAML_BYTES = 4 * 1024 * 1024
#: The most aliases (``*name``) a document may use.
MAX_YAML_ALIASES = 1000
#: The most nodes the document may hold with every alias expanded.
MAX_YAML_NODES = 1_000_000


class YamlLimitError(Exception):
    """A YAML document that is refused (too large, duplicate key, alias bomb).

    ``field`` is the dotted path of the offending mapping ("" for the whole document).
    """

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class _Loader(yaml.SafeLoader):
    """SafeLoader counting aliases and keeping impossible timestamps as text."""

    n_aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.n_aliases += 1
            if self.n_aliases > MAX_YAML_ALIASES:
                mark = self.peek_event().start_mark
                raise YamlLimitError(
                    f"more than {MAX_YAML_ALIASES} aliases (line {mark.line + 1}); "
                    "write the values out instead"
                )
        return super().compose_node(parent, index)

    def construct_yaml_timestamp(self, node: Any) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except (ValueError, OverflowError):
            return str(node.value)  # "2026-02-30": the caller reports it with its field


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


def _key_text(node: Any) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else f"<{node.id}>"


def _check_tree(root: Any) -> None:
    """Refuse duplicate keys, recursive aliases and an expanded size over the bound.

    Each node is visited once (aliases share their node), iteratively; ``size`` holds the
    expanded node count of every finished node.
    """
    size: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[Any, str, bool]] = [(root, "", False)]
    while stack:
        node, path, done = stack.pop()
        key = id(node)
        if done:
            children = _children(node)
            size[key] = 1 + sum(size[id(c)] for c, _ in children)
            active.discard(key)
            if size[key] > MAX_YAML_NODES:
                raise YamlLimitError(
                    f"the document expands to more than {MAX_YAML_NODES} values (nested aliases?)",
                    path,
                )
            continue
        if key in size:
            continue
        if key in active:
            raise YamlLimitError("an alias refers to a value that contains it", path)
        active.add(key)
        if isinstance(node, yaml.MappingNode):
            _check_duplicates(node, path)
        stack.append((node, path, True))
        for child, sub in _children(node):
            if id(child) in active:
                raise YamlLimitError(
                    "an alias refers to a value that contains it", _join(path, sub)
                )
            if id(child) not in size:
                stack.append((child, _join(path, sub), False))


def _join(path: str, sub: str) -> str:
    return f"{path}.{sub}" if path and sub else path or sub


def _children(node: Any) -> list[tuple[Any, str]]:
    if isinstance(node, yaml.MappingNode):
        out: list[tuple[Any, str]] = []
        for k, v in node.value:
            out += [(k, ""), (v, _key_text(k))]
        return out
    if isinstance(node, yaml.SequenceNode):
        return [(c, str(i)) for i, c in enumerate(node.value)]
    return []


def _check_duplicates(node: Any, path: str) -> None:
    seen: dict[str, int] = {}
    for k, _ in node.value:
        if k.tag == "tag:yaml.org,2002:merge":
            continue
        text = _key_text(k)
        line = k.start_mark.line + 1
        if text in seen:
            where = _join(path, text)
            raise YamlLimitError(
                f"key {text!r} is listed twice (lines {seen[text]} and {line}); "
                "each key may appear once",
                where,
            )
        seen[text] = line


def load_yaml(text: str) -> Any:
    """Parse one YAML document from ``text`` within the bounds of this module.

    Raises
    ------
    YamlLimitError
        Too long, too many aliases, expands too far, a recursive alias or a duplicate key.
    yaml.YAMLError
        Not YAML.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise YamlLimitError(f"the document is longer than {MAX_YAML_BYTES} bytes")
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise YamlLimitError("the document is nested too deeply") from None
        if node is None:
            return None
        _check_tree(node)
        try:
            return loader.construct_document(node)
        except RecursionError:
            raise YamlLimitError("the document is nested too deeply") from None
    finally:
        loader.dispose()
