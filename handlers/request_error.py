"""The one client-error type of every handler, importable without TorchServe (no `ts` import).

Request helpers (graph_request, image_request, molecule_request) raise it, and training code
imports those helpers too (train/core/handlers.py), so it must not need the serving stack.
"""

from typing import Any


class RequestError(ValueError):
    """A client error tied to one request: the field at fault, the problem and the HTTP code.

    A ValueError, because that is what it is to a caller outside a handler (training decoding
    a photo with the handler's own decoder gets the error it would expect).
    """

    def __init__(self, field: str, problem: str, code: int = 400) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem, self.code = field, problem, code

    def body(self) -> dict[str, Any]:
        """The JSON error body: `{"code": 400, "field": "x", "error": "x: ..."}`."""
        return {"code": self.code, "field": self.field, "error": str(self)}
