"""OpenAPI descriptions of the problem+json answers routes can give."""

from __future__ import annotations

from typing import Any

from app.domain.views import PROBLEM_JSON, Problem


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": "problem"}
        for status in (401, 422, *statuses)
    }
