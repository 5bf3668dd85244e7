"""The one place the spec layer reaches the network: plain HTTP GETs through urllib (no subprocess).

Everything that interprets a response lives in :mod:`torchenv.spec.outdated` as pure functions;
this module only moves bytes, bounded in time and size, and turns a failure into
:class:`Unreachable`, which names the source and the flag that points torchenv at a mirror.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from torchenv import __version__
from torchenv.errors import TorchenvError

#: A decoded JSON document, as it arrives: the readers in :mod:`torchenv.spec.outdated` narrow it with
#: isinstance into their typed records, so an unexpected shape is never trusted.
JSON: TypeAlias = "bool | int | float | str | list[JSON] | dict[str, JSON] | None"

#: Largest response read (PyPI's JSON for torch is ~1 MB; a registry config blob a few kB).
MAX_BYTES = 64 << 20


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> JSON:
        doc: JSON = json.loads(self.body.decode("utf-8"))
        return doc


#: (url, request headers) -> Response; raises OSError when the host cannot be reached at all.
Fetch = Callable[[str, Mapping[str, str]], Response]


class Unreachable(TorchenvError):
    """A release source could not be asked (network down, host unknown, HTTP error)."""

    def __init__(self, source: str, url: str, problem: str, flag: str) -> None:
        self.source = source
        super().__init__(
            f"{source} is unreachable ({url}: {problem}).",
            fix=f"check the network or point torchenv at a mirror with {flag} URL",
        )


def urllib_fetch(timeout: float) -> Fetch:
    """A :data:`Fetch` over urllib with ``timeout`` seconds per request."""

    def fetch(url: str, headers: Mapping[str, str]) -> Response:
        if not url.startswith(("https://", "http://")):
            raise OSError(f"not an http(s) URL: {url!r}")
        request = urllib.request.Request(url, headers={"User-Agent": f"torchenv/{__version__}", **headers})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                body = reply.read(MAX_BYTES + 1)
                status, reply_headers = reply.status, dict(reply.headers.items())
        except urllib.error.HTTPError as exc:  # 401 challenges and 404s are answers, not failures
            body = exc.read(MAX_BYTES + 1) if exc.fp is not None else b""
            return Response(exc.code, dict(exc.headers.items()) if exc.headers else {}, body)
        except (urllib.error.URLError, TimeoutError, ValueError) as exc:
            raise OSError(str(getattr(exc, "reason", exc))) from None
        if len(body) > MAX_BYTES:
            raise OSError(f"the response is larger than {MAX_BYTES} bytes")
        return Response(status, reply_headers, body)

    return fetch
