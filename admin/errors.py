"""Kubernetes `Status` bodies for every admin API error (API.md "Errors"). Pure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.api.admission import Cause

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    405: "MethodNotAllowed",
    408: "Timeout",
    409: "Conflict",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        kind: str | None = None,
        name: str | None = None,
        causes: Sequence[Cause] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason or REASONS.get(code, "Unknown")
        self.message = message
        self.kind = kind
        self.name = name
        self.causes = list(causes)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Status",
            "status": "Failure",
            "code": self.code,
            "reason": self.reason,
            "message": self.message,
        }
        details: dict[str, Any] = {}
        if self.kind:
            details["kind"] = self.kind
        if self.name:
            details["name"] = self.name
        if self.causes:
            details["causes"] = [
                {"field": c.field, "reason": c.reason, "message": c.message} for c in self.causes
            ]
        if details:
            out["details"] = details
        return out
