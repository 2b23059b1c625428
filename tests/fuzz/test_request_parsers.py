"""Fuzzing the request parsers and the webhook decoder with hypothesis.

What a client controls reaches egw through a few pure functions: the submit body
(`schemas.submit_request`), the query parsers (`int_query`, `duration_query`,
`bool_query`, `last_event_id`), the list cursor (`decode_cursor`), and, for a webhook,
the signature check and the delivery parser of `egw.wire.github`. Each property below
holds for any input: the parser returns a value within its documented bounds or raises
`InvalidRequest` (a 400), never anything else (which would be a 500); what is encoded
decodes to itself; and each call is quick. The runs are short (a few hundred examples,
a deadline per example) so that the suite stays fast; raise ``FUZZ_EXAMPLES`` for a
longer run.
"""

from __future__ import annotations

import base64
import json
import math
import os
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from egw.errors import InvalidRequest
from egw.service.requests import SubmitRequest
from egw.web import schemas
from egw.wire.github.delivery import Delivery, parse_delivery, sign, verify_signature

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")),
    deadline=timedelta(milliseconds=500),
    suppress_health_check=[HealthCheck.too_slow],
)

# JSON values, with the numbers that hurt: huge integers, infinities, NaN, -0.0
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -0.0, 1e308, 10**19, 2**63, 2**62, 2**62 + 1, 604800, 604800.0001]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=40))
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(["provider", "task", "name", "labels", "timeout_s", "extra"])


def submit_bodies() -> st.SearchStrategy[Any]:
    """Mostly well-formed bodies with hostile values, and some arbitrary JSON."""
    nearly = st.fixed_dictionaries(
        {"provider": st.one_of(st.just("local"), json_values), "task": json_values},
        optional={
            "name": st.one_of(st.text(max_size=250), json_values),
            "labels": st.one_of(
                st.dictionaries(st.text(max_size=70), st.text(max_size=300), max_size=70),
                json_values,
            ),
            "timeout_s": st.one_of(numbers, json_values),
        },
    )
    return st.one_of(nearly, st.dictionaries(field_names, json_values, max_size=6), json_values)


def mocked(query: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> Any:
    return make_mocked_request("GET", "/?" + urlencode(query or {}), headers=headers)


@FUZZ
@given(submit_bodies())
def test_submit_request_accepts_or_refuses(body: Any) -> None:
    try:
        req = schemas.submit_request(body)
    except InvalidRequest as exc:
        assert exc.status == 400 and exc.to_json()["error"]["message"]
        return
    assert isinstance(req, SubmitRequest)
    assert isinstance(req.provider, str) and req.provider
    assert isinstance(req.task, dict)
    if req.timeout_s is not None:
        assert isinstance(req.timeout_s, float) and 0 < req.timeout_s <= schemas.MAX_TIMEOUT_S
    json.dumps(body)  # what was taken can be stored as JSON


@FUZZ
@given(numbers)
def test_timeout_is_a_bounded_float_or_a_400(timeout: Any) -> None:
    body = {"provider": "local", "task": {}, "timeout_s": timeout}
    try:
        req = schemas.submit_request(body)
    except InvalidRequest as exc:
        assert exc.details.get("field") == "timeout_s"
        valid = (
            not (isinstance(timeout, float) and not math.isfinite(timeout))
            and 0 < timeout <= schemas.MAX_TIMEOUT_S
        )
        assert not valid, timeout
        return
    assert req.timeout_s == float(timeout)


@FUZZ
@given(st.integers(min_value=0, max_value=schemas.MAX_CURSOR))
def test_cursor_round_trips(seq: int) -> None:
    assert schemas.decode_cursor(schemas.encode_cursor(seq)) == seq


cursor_texts = st.one_of(
    st.text(max_size=80),
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=", max_size=80
    ),
    st.builds(
        lambda raw: base64.urlsafe_b64encode(raw.encode("utf-8", "surrogatepass")).decode(),
        st.one_of(
            st.text(max_size=40).map(lambda t: "s" + t),
            st.integers(min_value=-(10**40), max_value=10**40).map(lambda n: f"s{n}"),
        ),
    ),
)


@FUZZ
@given(cursor_texts)
def test_any_cursor_decodes_in_bounds_or_is_a_400(cursor: str) -> None:
    try:
        seq = schemas.decode_cursor(cursor)
    except InvalidRequest as exc:
        assert exc.details.get("field") == "cursor"
        return
    assert isinstance(seq, int) and 0 <= seq <= schemas.MAX_CURSOR


query_values = st.one_of(
    st.text(max_size=60),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.builds(lambda z, n: "0" * z + str(n), st.integers(0, 6000), st.integers(0, 10**25)),
    st.sampled_from(["", "-0", "+1", " 1", "1 ", "1e3", "0x10", "١٢", "1_000", "9" * 5000]),
)


@FUZZ
@given(query_values, st.integers(-5, 5), st.integers(0, 2**62))
def test_int_query_in_bounds_or_a_400(raw: str, lo: int, hi: int) -> None:
    try:
        value = schemas.int_query(mocked({"n": raw}), "n", default=lo, lo=lo, hi=hi)
    except InvalidRequest as exc:
        assert exc.details.get("field") == "n"
        return
    assert isinstance(value, int) and lo <= value <= hi
    assert value == int(raw.lstrip("0") or "0") if raw.isdigit() and raw.isascii() else True


@FUZZ
@given(
    st.one_of(
        query_values,
        st.builds(lambda v, u: v + u, query_values, st.sampled_from(["ms", "s", "m", "h"])),
    )
)
def test_duration_query_is_capped_or_a_400(raw: str) -> None:
    try:
        value = schemas.duration_query(mocked({"wait": raw}), "wait", default_s=1.0, max_s=300.0)
    except InvalidRequest as exc:
        assert exc.details.get("field") == "wait"
        return
    assert 0 <= value <= 300.0 and not math.isnan(value)


@FUZZ
@given(st.text(max_size=20))
def test_bool_query_is_a_bool_or_a_400(raw: str) -> None:
    try:
        value = schemas.bool_query(mocked({"force": raw}), "force")
    except InvalidRequest:
        return
    assert isinstance(value, bool)


header_safe = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@FUZZ
@given(st.one_of(st.none(), query_values), st.one_of(st.none(), header_safe))
def test_last_event_id_in_bounds_or_a_400(query: str | None, header: str | None) -> None:
    request = mocked(
        {"after": query} if query is not None else None,
        {"Last-Event-ID": header} if header is not None else None,
    )
    try:
        value = schemas.last_event_id(request, query="after")
    except InvalidRequest as exc:
        assert exc.details.get("field") == "after"
        return
    assert value is None or 0 <= value <= schemas.MAX_CURSOR


# --- the webhook decoder -----------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=200), st.binary(min_size=1, max_size=40))
def test_signature_round_trips(body: bytes, secret: bytes) -> None:
    signature = sign(secret, body)
    assert verify_signature(secret, body, signature)
    assert verify_signature(secret, body, f"  {signature} ")
    assert not verify_signature(secret, body + b"x", signature)
    assert not verify_signature(secret + b"x", body, signature)


@FUZZ
@given(st.binary(max_size=200), st.text(max_size=40), st.one_of(st.none(), st.text(max_size=80)))
def test_any_signature_header_is_checked_without_error(
    body: bytes, secret: str, header: str | None
) -> None:
    result = verify_signature(secret, body, header)
    assert result is (bool(secret) and header is not None and header.strip() == sign(secret, body))


def ids() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.integers(min_value=-(10**30), max_value=10**30),
        st.text(max_size=12),
        st.sampled_from(["--5", "-", " 12 ", "١٢", "1.5", "0", "-1", "9" * 30]),
        st.floats(),
        json_values,
    )


run_like = st.fixed_dictionaries(
    {"id": ids()},
    optional={
        "run_id": ids(),
        "run_attempt": ids(),
        "workflow_id": ids(),
        "status": json_values,
        "conclusion": json_values,
        "created_at": st.one_of(st.text(max_size=30), json_values),
        "steps": st.one_of(
            st.lists(
                st.fixed_dictionaries({}, optional={"number": ids(), "name": json_values}),
                max_size=3,
            ),
            json_values,
        ),
    },
)
events = st.sampled_from(["workflow_run", "workflow_job", "ping", "push", ""])


@FUZZ
@given(
    events,
    st.one_of(st.none(), st.text(max_size=40)),
    st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda action, obj, key: json.dumps(
                {"action": action, key: obj, "zen": action}
            ).encode(),
            json_values,
            st.one_of(run_like, json_values),
            st.sampled_from(["workflow_run", "workflow_job"]),
        ),
    ),
)
@example("workflow_run", None, b'{"workflow_run": {"id": "--5"}}')
@example("workflow_job", None, b'{"workflow_job": {"id": 1, "run_id": 2, "run_attempt": "--1"}}')
@example("workflow_run", None, b'{"workflow_run": {"id": 1e300}}')
@example("workflow_job", None, b'{"workflow_job": {"id": 1, "run_id": -3}}')
def test_any_delivery_parses_or_is_a_400(event: str, delivery_id: str | None, body: bytes) -> None:
    headers = {"X-GitHub-Event": event}
    if delivery_id is not None:
        headers["X-GitHub-Delivery"] = delivery_id
    try:
        delivery = parse_delivery(headers, body)
    except InvalidRequest as exc:
        assert exc.status == 400
        return
    assert isinstance(delivery, Delivery) and delivery.event == event
    for obj in (delivery.run, delivery.job):
        if obj is not None:  # ids fit the 64-bit integers they are stored and sent as
            assert 0 < obj.id < 2**63
    if delivery.job is not None:
        assert 0 < delivery.job.run_id < 2**63
