"""Asset signing as a pluggable step: an href goes in, a readable href comes out.

Public buckets (Earth Search's ``sentinel-cogs``, Copernicus DEM on AWS) need nothing
(:class:`NoSigning`). The Planetary Computer serves assets from Azure Blob Storage that
need a shared access signature (SAS) token appended to the URL; its token endpoint
(``GET https://planetarycomputer.microsoft.com/api/sas/v1/token/{account}/{container}``,
answering ``{"token": "...", "msft:expiry": "2024-01-01T00:00:00Z"}``) hands out one per
storage container, valid for about an hour. :class:`PlanetaryComputerSigning` fetches it
with the standard library, caches it per container until shortly before it expires, and
retries failed requests with the download's backoff. Any object with a ``sign(href) ->
href`` method can be passed instead.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from demgen.sources.stac import RetryPolicy, SourceUnavailable, with_retries

PC_TOKEN_URL = "https://planetarycomputer.microsoft.com/api/sas/v1/token"
BLOB_SUFFIX = ".blob.core.windows.net"


class Signing(Protocol):
    """Turns an asset href into one that can be read (e.g. with a token appended)."""

    def sign(self, href: str) -> str: ...


class NoSigning:
    """Hrefs are read as they are."""

    name = "none"

    def sign(self, href: str) -> str:
        return href


@dataclass
class PlanetaryComputerSigning:
    """SAS tokens from the Planetary Computer's token endpoint (module docstring)."""

    token_url: str = PC_TOKEN_URL
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = 30.0
    margin_s: float = 300.0  # renew tokens this long before they expire
    name: str = "planetary-computer"
    _cache: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    requests: int = 0

    def sign(self, href: str) -> str:
        """``href`` with a token appended when it is an Azure blob URL, else unchanged."""
        url = urllib.parse.urlsplit(href)
        host = url.hostname or ""
        if url.scheme not in ("http", "https") or not host.endswith(BLOB_SUFFIX):
            return href
        if "se=" in url.query and "sig=" in url.query:
            return href  # already signed
        account = host[: -len(BLOB_SUFFIX)]
        container = url.path.lstrip("/").split("/", 1)[0]
        token = self._token(account, container)
        query = f"{url.query}&{token}" if url.query else token
        return urllib.parse.urlunsplit(url._replace(query=query))

    def _token(self, account: str, container: str) -> str:
        cached = self._cache.get((account, container))
        if cached and cached[1] - self.margin_s > time.time():
            return cached[0]
        endpoint = f"{self.token_url.rstrip('/')}/{account}/{container}"

        def fetch() -> dict:
            self.requests += 1
            with urllib.request.urlopen(endpoint, timeout=self.timeout) as resp:
                return json.loads(resp.read().decode("utf-8"))

        try:
            body = with_retries(
                fetch, self.retry, (urllib.error.URLError, OSError, ValueError), endpoint
            )
        except SourceUnavailable:
            raise
        token = str(body.get("token") or "")
        if not token:
            raise SourceUnavailable(f"{endpoint}: the token endpoint answered no token")
        self._cache[(account, container)] = (token, _expiry(body.get("msft:expiry")))
        return token


def _expiry(text: object) -> float:
    """Seconds since the epoch of an ISO 8601 expiry (an hour from now when unreadable)."""
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time() + 3600.0


def make_signing(name: str, retry: RetryPolicy, token_url: str | None = None) -> Signing:
    """``--sign none|planetary-computer`` -> a signing step."""
    if name == "planetary-computer":
        return PlanetaryComputerSigning(token_url=token_url or PC_TOKEN_URL, retry=retry)
    return NoSigning()
