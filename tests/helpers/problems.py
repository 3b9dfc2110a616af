"""What every error answer must be: an RFC 9457 problem document."""

from __future__ import annotations

from typing import Any

import httpx

from app.domain.views import Problem


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """``response`` is a ``status`` problem+json with ``code``, valid against the app's
    ``Problem`` schema, whose ``status`` member is the HTTP status; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    problem = Problem.model_validate(body, strict=True)
    assert problem.status == response.status_code, body
    assert problem.code == code, body
    assert problem.type.endswith(f"/problems/{code}"), body
    assert "Traceback" not in response.text
    return body
