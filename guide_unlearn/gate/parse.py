"""Parsing text with bounds: UTF-8 decoding, JSON (size and nesting checked on the text before parsing), JSON
lines, CSV and YAML (a safe loader that refuses aliases, so a few hundred bytes cannot expand into gigabytes, and
that counts nesting while it composes). Every failure is the kind's typed error naming the file."""

from __future__ import annotations

import csv
import json
import re
from typing import Any, Optional, Union

from .kinds import Kind, get_kind

__all__ = ["card_header", "check_nesting", "decode_text", "json_depth", "parse_csv", "parse_json", "parse_jsonl",
           "parse_yaml"]

KindLike = Union[str, Kind]


def decode_text(data: Union[bytes, str], where: str, kind: KindLike) -> str:
    """UTF-8 text (a leading byte-order mark dropped; NUL characters refused) or the kind's error."""
    kind = get_kind(kind)
    if isinstance(data, str):
        text = data
    else:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise kind.error(f"{where}: the {kind.name} is not UTF-8 text (byte {exc.start}); save it as UTF-8") \
                from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\x00" in text:
        raise kind.error(f"{where}: the {kind.name} holds NUL characters; it is not a text file")
    return text


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


def json_depth(data: bytes) -> int:
    """Maximal ``[`` / ``{`` nesting of JSON text (strings skipped), computed without parsing."""
    import numpy as np

    stripped = _JSON_STRING.sub(b'""', data)
    arr = np.frombuffer(stripped, dtype=np.uint8)
    step = (np.isin(arr, (0x5B, 0x7B)).astype(np.int64) - np.isin(arr, (0x5D, 0x7D)).astype(np.int64))
    return int(np.cumsum(step).max()) if len(step) else 0


def check_nesting(obj: Any, where: str, kind: KindLike, max_depth: Optional[int] = None,
                  max_nodes: Optional[int] = None) -> int:
    """Walk parsed data iteratively; refuse nesting deeper than the kind's depth or more items than its node
    budget (shared references counted each time, so a DAG is bounded as the tree it expands to). -> nodes."""
    kind = get_kind(kind)
    max_depth = kind.max_depth if max_depth is None else max_depth
    max_nodes = kind.max_nodes if max_nodes is None else max_nodes
    stack: list[tuple[Any, int]] = [(obj, 0)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise kind.error(f"{where}: the data expands to more than {max_nodes} items; refusing it")
        if depth > max_depth:
            raise kind.error(f"{where}: data nested deeper than {max_depth} levels; the file is malformed or hostile")
        if isinstance(item, dict):
            stack.extend((c, depth + 1) for c in (*item.keys(), *item.values()))
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend((c, depth + 1) for c in item)
    return nodes


def parse_json(data: Union[bytes, str], where: str, kind: KindLike, max_depth: Optional[int] = None) -> Any:
    """JSON text of at most the kind's size and nesting (checked on the text before parsing), parsed, then its
    item count bounded. Raises the kind's error."""
    kind = get_kind(kind)
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    max_depth = kind.max_depth if max_depth is None else max_depth
    if len(raw) > kind.max_bytes:
        raise kind.error(f"{where}: {len(raw)} bytes of JSON, over the {kind.max_bytes}-byte limit; refusing it")
    if json_depth(raw) > max_depth:
        raise kind.error(f"{where}: JSON nested deeper than {max_depth} levels; the file is malformed or hostile")
    text = decode_text(raw, where, kind)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise kind.error(f"{where}: not valid JSON ({str(exc)[:200]}); get a fresh copy of the file") from None
    check_nesting(value, where, kind, max_depth=max_depth)
    return value


def parse_jsonl(data: Union[bytes, str], where: str, kind: KindLike, max_lines: int = 100_000) -> list[tuple[int, Any]]:
    """JSON lines -> [(line number, value)] (blank lines skipped), each line bounded like :func:`parse_json`."""
    kind = get_kind(kind)
    text = decode_text(data, where, kind)
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if len(out) >= max_lines:
            raise kind.error(f"{where}: more than {max_lines} lines; split the file")
        out.append((n, parse_json(line, f"{where}:{n}", kind)))
    return out


def parse_csv(data: Union[bytes, str], where: str, kind: KindLike, max_rows: int = 100_000,
              max_field: int = 4096) -> tuple[list[str], list[dict[str, str]]]:
    """CSV text with a header row -> (field names, rows as dicts). Fields longer than ``max_field`` characters,
    more than ``max_rows`` rows, or malformed quoting raise the kind's error."""
    kind = get_kind(kind)
    text = decode_text(data, where, kind)
    old = csv.field_size_limit()
    csv.field_size_limit(max_field)
    try:
        reader = csv.DictReader(text.splitlines(), restkey="\x00extra")
        fields = list(reader.fieldnames or [])
        rows = []
        for row in reader:
            if len(rows) >= max_rows:
                raise kind.error(f"{where}: more than {max_rows} rows; split the file")
            if "\x00extra" in row:
                raise kind.error(f"{where}:{reader.line_num}: more fields than the header names")
            rows.append({k: (v or "") for k, v in row.items()})
    except csv.Error as exc:
        raise kind.error(f"{where}: not a readable CSV file ({str(exc)[:200]}); fields are at most {max_field} "
                         "characters") from None
    finally:
        csv.field_size_limit(old)
    return fields, rows


def _yaml_loader(where: str, kind: Kind):
    """A PyYAML SafeLoader that refuses aliases (no expansion at all), counts nesting while composing, and keeps
    timestamps as strings."""
    import yaml

    class Loader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
            if self.check_event(yaml.AliasEvent):
                raise kind.error(f"{where}: YAML aliases (*name) are not accepted in a {kind.name}; write the values "
                                 "out (an alias can make a few hundred bytes expand into gigabytes)")
            Loader.depth += 1
            try:
                if Loader.depth > kind.max_depth:
                    raise kind.error(f"{where}: YAML nested deeper than {kind.max_depth} levels; the file is "
                                     "malformed or hostile")
                return super().compose_node(parent, index)
            finally:
                Loader.depth -= 1

    Loader.yaml_implicit_resolvers = {k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
                                      for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    return Loader


def parse_yaml(text: str, where: str, kind: KindLike) -> Any:
    """One YAML document, parsed safely (no aliases, bounded nesting and items). Raises the kind's error."""
    import yaml

    kind = get_kind(kind)
    if len(text.encode("utf-8", "surrogatepass")) > kind.max_bytes:
        raise kind.error(f"{where}: more than {kind.max_bytes} bytes of YAML; refusing it")
    try:
        value = yaml.load(text, Loader=_yaml_loader(where, kind))  # noqa: S506 - the no-alias SafeLoader above
    except kind.error:
        raise
    except (yaml.YAMLError, ValueError, TypeError, RecursionError, OverflowError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise kind.error(f"{where}: not valid YAML ({first}); fix or remove the file") from None
    check_nesting(value, where, kind)
    return value


_HEADER = re.compile(r"\A\s*---[ \t]*\r?\n(.*?)(?:\r?\n)---[ \t]*(?:\r?\n|\Z)", re.S)


def card_header(text: str) -> tuple[Optional[str], str]:
    """Split a model card into (its YAML header text or None, the Markdown body)."""
    m = _HEADER.match(text)
    if m is None:
        return None, text
    return m.group(1), text[m.end():]
