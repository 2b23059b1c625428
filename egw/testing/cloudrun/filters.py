"""A subset of the Cloud Logging query language, enough for the filters egw and its users send.

Supported (https://cloud.google.com/logging/docs/view/logging-query-language): comparisons
``field OP value`` with ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``:`` (has / substring),
``=~`` and ``!~`` (regular expressions); ``AND``, ``OR``, ``NOT`` (and ``-``), parentheses, and
juxtaposition as an implicit ``AND``. Field paths are dotted, with quoted segments for keys that
hold dots or slashes (``labels."run.googleapis.com/execution_name"``). ``timestamp`` and
``receiveTimestamp`` compare as instants. Anything else is a `FilterError` (the simulator answers
400 ``INVALID_ARGUMENT``, as Logging does for a filter it cannot parse), never a silent match-all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from egw.wire.cloudrun import normalize_timestamp

Predicate = Callable[[Mapping[str, Any]], bool]

_OPS = (">=", "<=", "!=", "=~", "!~", "=", "<", ">", ":")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BARE = re.compile(r"[^\s()\"<>=!:]+")
_TIME_FIELDS = frozenset({"timestamp", "receiveTimestamp"})


class FilterError(ValueError):
    pass


def compile_filter(text: str) -> Predicate:
    """Parse a filter into a predicate over a LogEntry (as JSON); empty matches everything."""
    if len(text) > 20000:
        raise FilterError("the filter is longer than 20,000 characters")
    parser = _Parser(text)
    if not parser.rest().strip():
        return lambda entry: True
    pred = parser.expr()
    parser.skip_ws()
    if parser.pos != len(text):
        raise FilterError(
            f"unexpected text at {parser.pos}: {text[parser.pos : parser.pos + 20]!r}"
        )
    return pred


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def rest(self) -> str:
        return self.text[self.pos :]

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def keyword(self, word: str) -> bool:
        self.skip_ws()
        end = self.pos + len(word)
        if self.text.startswith(word, self.pos) and (
            end == len(self.text) or self.text[end].isspace() or self.text[end] == "("
        ):
            self.pos = end
            return True
        return False

    def expr(self) -> Predicate:
        left = self.conj()
        while self.keyword("OR"):
            right = self.conj()
            left = _either(left, right)
        return left

    def conj(self) -> Predicate:
        left = self.unary()
        while True:
            if self.keyword("AND"):
                right = self.unary()
            else:
                self.skip_ws()
                if self.pos >= len(self.text) or self.text[self.pos] == ")" or self._at_or():
                    return left
                right = self.unary()  # juxtaposition is AND
            left = _both(left, right)

    def _at_or(self) -> bool:
        save = self.pos
        found = self.keyword("OR")
        self.pos = save
        return found

    def unary(self) -> Predicate:
        if self.keyword("NOT"):
            inner = self.unary()
            return lambda e: not inner(e)
        self.skip_ws()
        if self.text.startswith("-", self.pos):
            self.pos += 1
            inner = self.unary()
            return lambda e: not inner(e)
        if self.text.startswith("(", self.pos):
            self.pos += 1
            inner = self.expr()
            self.skip_ws()
            if not self.text.startswith(")", self.pos):
                raise FilterError(f"missing ')' at {self.pos}")
            self.pos += 1
            return inner
        return self.comparison()

    def comparison(self) -> Predicate:
        path = self.field()
        self.skip_ws()
        op = next((o for o in _OPS if self.text.startswith(o, self.pos)), None)
        if op is None:
            raise FilterError(f"expected a comparison operator after {'.'.join(path)!r}")
        self.pos += len(op)
        value = self.value()
        return _compare(path, op, value)

    def field(self) -> list[str]:
        self.skip_ws()
        path = [self._segment()]
        while self.text.startswith(".", self.pos):
            self.pos += 1
            path.append(self._segment())
        return path

    def _segment(self) -> str:
        if self.text.startswith('"', self.pos):
            return self._quoted()
        m = _IDENT.match(self.text, self.pos)
        if not m:
            raise FilterError(f"expected a field name at {self.pos}")
        self.pos = m.end()
        return m.group(0)

    def value(self) -> str:
        self.skip_ws()
        if self.text.startswith('"', self.pos):
            return self._quoted()
        m = _BARE.match(self.text, self.pos)
        if not m:
            raise FilterError(f"expected a value at {self.pos}")
        self.pos = m.end()
        return m.group(0)

    def _quoted(self) -> str:
        m = re.compile(r'"(?:[^"\\]|\\.)*"').match(self.text, self.pos)
        if not m:
            raise FilterError(f"unterminated string at {self.pos}")
        self.pos = m.end()
        try:
            return str(json.loads(m.group(0)))
        except ValueError as exc:
            raise FilterError(f"bad string escape at {m.start()}") from exc


def _either(a: Predicate, b: Predicate) -> Predicate:
    return lambda e: a(e) or b(e)


def _both(a: Predicate, b: Predicate) -> Predicate:
    return lambda e: a(e) and b(e)


def _lookup(entry: Mapping[str, Any], path: list[str]) -> Any:
    value: Any = entry
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def _compare(path: list[str], op: str, wanted: str) -> Predicate:
    is_time = len(path) == 1 and path[0] in _TIME_FIELDS
    if is_time and op not in (":", "=~", "!~"):
        try:
            wanted = normalize_timestamp(wanted)
        except ValueError as exc:
            raise FilterError(f"invalid timestamp {wanted!r}") from exc
    pattern = re.compile(wanted) if op in ("=~", "!~") else None

    def pred(entry: Mapping[str, Any]) -> bool:
        value = _lookup(entry, path)
        if value is None:
            return op in ("!=", "!~")
        text = value if isinstance(value, str) else json.dumps(value)
        if is_time and op not in (":", "=~", "!~"):
            text = normalize_timestamp(text)
        if op == "=":
            return text == wanted
        if op == "!=":
            return text != wanted
        if op == ":":
            return wanted.lower() in text.lower()
        if pattern is not None:
            return bool(pattern.search(text)) == (op == "=~")
        return {"<": text < wanted, "<=": text <= wanted, ">": text > wanted, ">=": text >= wanted}[
            op
        ]

    return pred
