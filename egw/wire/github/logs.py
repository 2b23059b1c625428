"""A job's log as GitHub serves it (pure): the blob's answers, the runner's line format.

``GET /repos/{owner}/{repo}/actions/jobs/{job_id}/logs`` answers ``302`` to a signed
blob URL whatever the job's state (rest-actions.openapi.json documents only the 302).
While the job is queued or running, or until the runner's upload lands after it
completed, that URL answers ``404`` with Azure Blob Storage's XML error body,
``<Error><Code>BlobNotFound</Code><Message>The specified blob does not exist.
...</Message></Error>``, ``x-ms-error-code: BlobNotFound`` (Azure's documented Blob
service error codes; a recorded answer in Azure/WALinuxAgent#2311). That 404 means
"not yet": the provider asks again until a deadline.

The runner writes each line as ``DateTime.UtcNow.ToString("O")`` + space + message
(actions/runner ``src/Runner.Common/Logging.cs``, ``PagingLogger.Write``): the
round-trip format, seven fractional digits and ``Z``; through a ``StreamWriter`` made
with ``Encoding.UTF8``, which writes a byte order mark first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from egw.wire.github.values import header

#: one line of a runner log: ``2024-05-01T12:00:00.1234567Z message``
RUNNER_LINE: Final = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z) (.*)")
_CODE: Final = re.compile(rb"<Code>\s*([A-Za-z]+)\s*</Code>")
BOM: Final = "\ufeff"


def blob_error_code(headers: Mapping[str, str], body: bytes) -> str | None:
    """The Azure error code of a blob answer (``x-ms-error-code``, else the XML body)."""
    code = header(headers, "x-ms-error-code")
    if code:
        return code.strip()
    found = _CODE.search(body[:4096])
    return found.group(1).decode() if found else None


def log_not_yet(status: int, headers: Mapping[str, str], body: bytes) -> bool:
    """Whether a blob answer says the log does not exist *yet* (a 404 ``BlobNotFound``)."""
    return status == 404 and blob_error_code(headers, body) in ("BlobNotFound", None)


def log_text(body: bytes) -> str:
    """A downloaded job log as text, without the byte order mark the runner writes first."""
    return body.decode("utf-8", "replace").removeprefix(BOM)
