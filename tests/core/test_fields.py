"""The shared field validators: one rule and one message for every provider."""

from __future__ import annotations

import re
from typing import Any

import pytest

from egw.core import fields
from egw.errors import InvalidRequest


def refused(fn: Any, *args: Any, **kw: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        fn(*args, **kw)
    return info.value


@pytest.mark.parametrize("value", [10**400, -(10**400), 1e400, float("nan"), True, "3", 3.5, None])
def test_integer_refuses_before_any_conversion(value: Any) -> None:
    err = refused(fields.integer, value, "task.timeout_s", 1, 86400)
    assert err.details["field"] == "task.timeout_s"


def test_integer_and_number_accept_in_bounds() -> None:
    assert fields.integer(3.0, "x", 1, 10) == 3
    assert fields.integer(10, "x", 1, 10) == 10
    assert fields.number(0.5, "x", 0, 1) == 0.5
    assert "between" in refused(fields.number, 10**400, "x", 0, 1).message
    assert "finite" in refused(fields.number, float("inf"), "x", 0, 1).message


def test_text_refuses_nul_and_oversize_by_bytes() -> None:
    assert "NUL" in refused(fields.text, "a\x00b", "task.command").message
    assert "longer" in refused(fields.text, "é" * 6, "task.x", max_bytes=10).message
    assert "empty" in refused(fields.text, "  ", "task.x", allow_empty=False).message
    assert fields.text("ok", "task.x") == "ok"


def test_argv_names_the_bad_item() -> None:
    assert fields.argv(["a", "b"], "task.args") == ["a", "b"]
    assert refused(fields.argv, ["a", 1], "task.args").details["field"] == "task.args[1]"
    assert refused(fields.argv, "a b", "task.args").details["field"] == "task.args"
    assert "more than 2" in refused(fields.argv, ["a"] * 3, "task.args", max_items=2).message


def test_env_names_reserved_and_values() -> None:
    assert fields.env({"A_1": "x"}) == {"A_1": "x"}
    assert refused(fields.env, {"1A": "x"}).details["field"] == "task.env.1A"
    assert refused(fields.env, {"A-B": "x"}).details["field"] == "task.env.A-B"
    wide = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
    assert fields.env({"A-B": "x"}, names=wide) == {"A-B": "x"}
    assert (
        "set by egw" in refused(fields.env, {"EGW_TASK_ID": "x"}, reserved={"EGW_TASK_ID"}).message
    )
    assert refused(fields.env, {"A": 1}).details["field"] == "task.env.A"
    assert refused(fields.env, ["A"]).details["field"] == "task.env"


def test_known_keys_and_required() -> None:
    fields.known_keys({"a": 1}, {"a", "b"})
    err = refused(fields.known_keys, {"a": 1, "zz": 2, "c": 3}, {"a"})
    assert err.details["field"] == "task.c" and "known: a" in err.message
    assert refused(fields.required, {}, "job", hint=" (no default)").message == (
        "task.job is required (no default)"
    )
    assert refused(fields.mapping, [], "task").details["field"] == "task"


def test_name_and_string_map() -> None:
    label = re.compile(r"[a-z]+")
    assert fields.name("abc", "task.job", label, "lowercase") == "abc"
    assert "lowercase" in refused(fields.name, "ABC", "task.job", label, "lowercase").message
    assert fields.string_map({"k": "v"}, "task.meta") == {"k": "v"}
    assert refused(fields.string_map, {"k": 1}, "task.meta").details["field"] == "task.meta.k"
