"""The Cloud Logging query language, as far as the filters of egw and of Google's clients go.

Supported (https://cloud.google.com/logging/docs/view/logging-query-language): comparisons
``field OP value`` with ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``:`` (has / substring),
``=~`` and ``!~`` (regular expressions); ``AND``, ``OR``, ``NOT`` (and ``-``), parentheses, and
juxtaposition as an implicit ``AND``; values quoted (JSON-style escapes) or bare. Field paths are
dotted, with quoted segments for keys that hold dots or slashes
(``labels."run.googleapis.com/execution_name"``).

* ``timestamp`` and ``receiveTimestamp`` compare as instants, the value in any RFC 3339 form
  (``T``/``t``/space, ``Z``/``z`` or an offset, 0 to 9 or more fractional digits) and in the form
  google-cloud-logging itself sends, an offset without a colon (``+0000``: googleapis/
  python-logging, google/cloud/logging_v2/_helpers.py, ``_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f%z"``,
  used by ``_add_defaults_to_filter`` for every ``list_entries``).
* ``severity`` compares by rank (``severity>=WARNING``), the order of googleapis
  google/logging/type/log_severity.proto.
* A number compares as a number when the field holds a JSON number.

Anything else is a `FilterError` (the simulator answers 400 ``INVALID_ARGUMENT``, as Logging does
for a filter it cannot parse), never a silent match-all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

Predicate = Callable[[Mapping[str, Any]], bool]

_OPS = (">=", "<=", "!=", "=~", "!~", "=", "<", ">", ":")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# a bare value runs to the next space or parenthesis (a timestamp's ':' included)
_BARE = re.compile(r"[^\s()\"<>=!]+")
_TIME_FIELDS = frozenset({"timestamp", "receiveTimestamp"})
_INSTANT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))"
)
#: LogSeverity numbers (googleapis google/logging/type/log_severity.proto)
SEVERITIES = {
    "DEFAULT": 0,
    "DEBUG": 100,
    "INFO": 200,
    "NOTICE": 300,
    "WARNING": 400,
    "ERROR": 500,
    "CRITICAL": 600,
    "ALERT": 700,
    "EMERGENCY": 800,
}


def instant_ns(text: str) -> int:
    """An RFC 3339 timestamp (or ``+hhmm`` offset) as nanoseconds since the epoch; digits beyond
    nanoseconds are dropped. Raises ValueError for anything else."""
    m = _INSTANT.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac, zulu, sign, off_h, off_m = m.group(7), m.group(8), m.group(9), m.group(10), m.group(11)
    when = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    offset = 0 if zulu else (int(off_h) * 60 + int(off_m)) * (1 if sign == "+" else -1)
    seconds = int((when - _EPOCH).total_seconds()) - offset * 60
    return seconds * 1_000_000_000 + int((frac or "")[:9].ljust(9, "0"))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


#: "The maximum length of a filter is 20,000 characters." (googleapis
#: google/logging/v2/logging.proto, ListLogEntriesRequest.filter). Kept here rather than taken
#: from egw.wire: the simulator holds egw to the upstream, so it shares none of egw's code
MAX_FILTER_CHARS = 20_000


class FilterError(ValueError):
    pass


def compile_filter(text: str) -> Predicate:
    """Parse a filter into a predicate over a LogEntry (as JSON); empty matches everything."""
    if len(text) > MAX_FILTER_CHARS:
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
        terms = [self.conj()]
        while self.keyword("OR"):
            terms.append(self.conj())
        return _any(terms)

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
        pred = _compare(path, op, value)
        if op == "=" and not _special(path):
            return _Equals(path, value, pred)
        return pred

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


class _Equals:
    """``field = "value"``: a predicate `_any` can merge with others on the same field."""

    def __init__(self, path: list[str], value: str, general: Predicate) -> None:
        self.path = path
        self.value = value
        self.general = general

    def __call__(self, entry: Mapping[str, Any]) -> bool:
        return self.general(entry)


def _any(terms: list[Predicate]) -> Predicate:
    """A disjunction. Equalities of one field (a filter that ORs hundreds of execution labels)
    become one set lookup when the entry holds a string there: the same answer as the comparisons
    one by one (a string equals exactly), without walking hundreds of them for every entry."""
    if len(terms) == 1:
        return terms[0]
    groups: dict[tuple[str, ...], list[_Equals]] = {}
    rest: list[Predicate] = []
    for term in terms:
        if isinstance(term, _Equals):
            groups.setdefault(tuple(term.path), []).append(term)
        else:
            rest.append(term)
    for group in groups.values():
        rest.append(group[0] if len(group) == 1 else _member(group))
    return rest[0] if len(rest) == 1 else lambda e: any(p(e) for p in rest)


def _member(group: list[_Equals]) -> Predicate:
    path = group[0].path
    values = frozenset(t.value for t in group)

    def pred(entry: Mapping[str, Any]) -> bool:
        have = _lookup(entry, path)
        if isinstance(have, str):
            return have in values
        return any(t.general(entry) for t in group)  # a number or a structure: compare each

    return pred


def _both(a: Predicate, b: Predicate) -> Predicate:
    return lambda e: a(e) and b(e)


def _lookup(entry: Mapping[str, Any], path: list[str]) -> Any:
    value: Any = entry
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def _special(path: list[str]) -> bool:
    """Fields whose ``=`` is not a plain string equality (instants, ranks)."""
    return path == ["severity"] or (len(path) == 1 and path[0] in _TIME_FIELDS)


def _compare(path: list[str], op: str, wanted: str) -> Predicate:
    is_time = len(path) == 1 and path[0] in _TIME_FIELDS and op not in (":", "=~", "!~")
    is_rank = path == ["severity"] and op not in (":", "=~", "!~")
    key: Callable[[str], Any] | None = None
    if is_time:
        key = instant_ns
    elif is_rank:
        key = _severity
    target: Any = wanted
    if key is not None:
        try:
            target = key(wanted)
        except ValueError as exc:
            raise FilterError(f"invalid {path[0]} {wanted!r}") from exc
    pattern = re.compile(wanted) if op in ("=~", "!~") else None

    def pred(entry: Mapping[str, Any]) -> bool:
        value = _lookup(entry, path)
        if value is None:
            return op in ("!=", "!~")
        text = value if isinstance(value, str) else json.dumps(value)
        if op == ":":
            return wanted.lower() in text.lower()
        if pattern is not None:
            return bool(pattern.search(text)) == (op == "=~")
        have: Any = text
        want: Any = target
        if key is not None:
            try:
                have = key(text)
            except ValueError:
                return op == "!="
        elif isinstance(value, int | float) and not isinstance(value, bool):
            try:
                have, want = value, float(wanted)
            except ValueError:
                pass
        return _OPS_CMP[op](have, want)

    return pred


def _severity(text: str) -> int:
    name = text.upper()
    if name in SEVERITIES:
        return SEVERITIES[name]
    if name.isdigit():
        return int(name)
    raise ValueError(f"not a severity: {text!r}")


_OPS_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: bool(a == b),
    "!=": lambda a, b: bool(a != b),
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
}
