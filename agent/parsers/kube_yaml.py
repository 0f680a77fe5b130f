"""Top-level settings of a kubelet (KubeletConfiguration) or kube-proxy
(KubeProxyConfiguration) config file: `/var/lib/kubelet/config.yaml`,
`/var/lib/kube-proxy/config.conf`, a binary install's hand-written YAML, or the JSON form.

The checks only need a handful of top-level scalars (`mode`, `hairpinMode`, `resolvConf`,
`clusterDNS`), so this is a small line parser, not a YAML implementation: it tolerates what
real files carry (a pasted shell prompt, comments, flow lists, several documents) and never
raises on garbage: text it cannot read yields no keys.
"""

from __future__ import annotations

import json
import re

#: `key: value` at column 0 (YAML keys in these configs are camelCase identifiers).
_TOP_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_.\-]*)[ \t]*:(?:[ \t]+(.*)|[ \t]*)$")
_CONFIG_KINDS = ("KubeletConfiguration", "KubeProxyConfiguration")


def parse_top_level_scalars(text: str) -> dict[str, str]:
    """Top-level `key: value` scalars, quotes stripped, comments ignored. Keys whose value is
    a nested block, a flow collection (`[...]`, `{...}`) or a block scalar (`|`, `>`) are left
    out; use `parse_top_level_list` for lists. JSON objects are accepted (scalars as text:
    `true`/`false`, numbers as written). With several YAML documents, the one whose `kind` is
    a kubelet/kube-proxy configuration wins, else the first."""
    if not isinstance(text, str):
        return {}
    as_json = _json_object(text)
    if as_json is not None:
        return {k: _json_scalar(v) for k, v in as_json.items()
                if isinstance(k, str) and _json_scalar(v) is not None}  # type: ignore[misc]
    docs = [_yaml_doc_scalars(doc) for doc in _split_documents(text)]
    docs = [d for d in docs if d]
    for doc in docs:
        if doc.get("kind") in _CONFIG_KINDS:
            return doc
    return docs[0] if docs else {}


def parse_top_level_list(text: str, key: str) -> list[str]:
    """The items of a top-level list (`clusterDNS: ["10.96.0.10"]`, or a block list of
    `- 10.96.0.10` lines, indented or not); a scalar value gives a one-item list; absent or
    unreadable gives []."""
    if not isinstance(text, str):
        return []
    as_json = _json_object(text)
    if as_json is not None:
        value = as_json.get(key)
        if isinstance(value, list):
            return [s for s in (_json_scalar(v) for v in value) if s is not None]
        scalar = _json_scalar(value)
        return [scalar] if scalar is not None else []
    lines = text.splitlines()
    for i, raw in enumerate(lines):
        m = _TOP_KEY.match(raw.rstrip("\r"))
        if not m or m.group(1) != key:
            continue
        value = _strip_comment(m.group(2) or "").strip()
        if value.startswith("["):
            inner = value[1:value.rfind("]")] if "]" in value else value[1:]
            return [_unquote(v.strip()) for v in inner.split(",") if v.strip()]
        if value:
            return [_unquote(value)]
        items = []
        for follow in lines[i + 1:]:
            stripped = follow.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if stripped.startswith("- ") or stripped == "-":
                item = _unquote(_strip_comment(stripped[1:]).strip())
                if item:
                    items.append(item)
                continue
            break
        return items
    return []


def _json_object(text: str) -> dict[object, object] | None:
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    try:
        value = json.loads(stripped)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _json_scalar(value: object) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return None


def _split_documents(text: str) -> list[list[str]]:
    docs: list[list[str]] = [[]]
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if (line.startswith("---") and (len(line) == 3 or line[3] in " \t")) or line == "...":
            docs.append([])
            continue
        docs[-1].append(line)
    return docs


def _yaml_doc_scalars(lines: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in lines:
        m = _TOP_KEY.match(line)
        if not m:
            continue
        key, value = m.group(1), _strip_comment(m.group(2) or "").strip()
        if not value or value[0] in "[{|>&*!":
            continue  # nested block, flow collection, block scalar, anchor/alias/tag
        found.setdefault(key, _unquote(value))
    return found


def _strip_comment(value: str) -> str:
    """Drop a trailing ` # comment` that is outside quotes."""
    quote = ""
    for i, ch in enumerate(value):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or value[i - 1] in " \t"):
            return value[:i]
    return value


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value
