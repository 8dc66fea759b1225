"""STAC API search with retries, cloud filtering on both sides, and one-line failures.

:func:`search` runs an item search (pystac-client) for one collection over a bbox and a
date range. Cloud cover is filtered twice: through the API's ``query`` extension
(``{"eo:cloud_cover": {"lte": max}}``) when the server declares that conformance class
(Earth Search and the Planetary Computer do; a server without it may answer nothing at
all to an unknown filter, so it is not sent there), and again on the client, since
servers differ in what they honour. Items without a cloud cover are rejected when a
maximum is asked for, and every rejection is kept with its reason for provenance.json.

HTTP requests are retried on connection errors and on 429/500/502/503/504 answers with
exponential backoff (``backoff x 2**(n-1)`` seconds, capped at ``max_backoff``: urllib3's
``Retry`` under pystac-client's ``StacApiIO``); when they keep failing the search raises
:class:`SourceUnavailable`, an :class:`~demgen.errors.InputError`, so the CLI prints one
line and exits 2.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from demgen.errors import InputError, first_line

EARTH_SEARCH = "https://earth-search.aws.element84.com/v1"
PLANETARY_COMPUTER = "https://planetarycomputer.microsoft.com/api/stac/v1"
RETRY_STATUS = (429, 500, 502, 503, 504)
T = TypeVar("T")


class SourceUnavailable(InputError):
    """A server (STAC API, asset host, token endpoint) kept failing after every retry."""


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more tries after the first, waiting ``backoff x 2**(n-1)`` seconds."""

    retries: int = 4
    backoff: float = 1.0
    max_backoff: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (1-based)."""
        return min(self.max_backoff, self.backoff * 2 ** (attempt - 1))

    def urllib3(self) -> Any:
        """The same policy as a urllib3 ``Retry`` (POST searches are retried too)."""
        from urllib3.util.retry import Retry

        return Retry(
            total=self.retries,
            connect=self.retries,
            read=self.retries,
            status=self.retries,
            backoff_factor=self.backoff,
            backoff_max=self.max_backoff,
            status_forcelist=RETRY_STATUS,
            allowed_methods=None,
            raise_on_status=True,
        )


def with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    errors: tuple[type[BaseException], ...],
    what: str,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """``fn()``, retried on ``errors`` per ``policy``; SourceUnavailable naming ``what``."""
    for attempt in range(policy.retries + 1):
        try:
            return fn()
        except errors as exc:
            if attempt == policy.retries:
                raise SourceUnavailable(
                    f"{what}: failed after {policy.retries + 1} tries ({first_line(exc)})"
                ) from exc
            if on_retry:
                on_retry(attempt + 1, exc)
            time.sleep(policy.delay(attempt + 1))
    raise AssertionError("unreachable")


def _request_errors() -> tuple[type[BaseException], ...]:
    import requests
    from pystac_client.exceptions import APIError

    return (requests.exceptions.RequestException, APIError, OSError)


def open_client(url: str, policy: RetryPolicy, timeout: float = 30.0) -> Any:
    """A pystac-client ``Client`` for ``url`` whose requests retry per ``policy``."""
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO

    io = StacApiIO(max_retries=policy.urllib3(), timeout=timeout)
    try:
        return Client.open(url, stac_io=io)
    except _request_errors() as exc:
        raise SourceUnavailable(
            f"STAC API {url} unreachable after {policy.retries + 1} tries ({_why(exc)})"
        ) from exc


def _why(exc: BaseException) -> str:
    """A short reason from requests' long nested messages."""
    text = first_line(exc)
    for marker in ("Connection refused", "timed out", "Name or service not known"):
        if marker in text:
            return marker
    if "too many" in text and "error responses" in text:
        return "the server kept answering errors"
    return text[:200]


@dataclass
class SearchResult:
    """Items kept (as STAC item dicts) and items rejected on the client, with reasons."""

    items: list[dict[str, Any]]
    rejected: list[dict[str, str]]
    server_query: dict[str, Any] | None


def _in_dates(item: dict[str, Any], dates: tuple[str, str]) -> bool:
    props = item.get("properties", {})
    when = str(props.get("datetime") or props.get("start_datetime") or "")[:10]
    return bool(when) and dates[0] <= when <= dates[1]


def parse_dates(text: str) -> tuple[str, str]:
    """``FROM/TO`` (ISO dates, inclusive) -> two ``YYYY-MM-DD`` strings."""
    parts = text.split("/")
    if len(parts) != 2:
        raise InputError(f"--dates {text!r}: expected FROM/TO, e.g. 2023-06-01/2023-08-31")
    out = []
    for p in parts:
        try:
            out.append(datetime.strptime(p.strip()[:10], "%Y-%m-%d").replace(tzinfo=UTC))
        except ValueError:
            raise InputError(f"--dates {text!r}: {p!r} is not a date YYYY-MM-DD") from None
    if out[0] > out[1]:
        raise InputError(f"--dates {text!r}: FROM is after TO")
    return out[0].strftime("%Y-%m-%d"), out[1].strftime("%Y-%m-%d")


def search(
    client: Any,
    collection: str,
    bbox: Sequence[float],
    dates: tuple[str, str] | None,
    *,
    max_cloud: float | None = None,
    cloud_property: str | None = "eo:cloud_cover",
    platforms: Sequence[str] = (),
    max_items: int | None = None,
    url: str = "",
    page_size: int = 100,
) -> SearchResult:
    """Items of ``collection`` over ``bbox`` in ``dates`` (None: any date; module docstring)."""
    from pystac_client import ConformanceClasses

    query = None
    if max_cloud is not None and cloud_property:
        query = {cloud_property: {"lte": float(max_cloud)}}
        try:
            if not client.conforms_to(ConformanceClasses.QUERY):
                query = None
        except Exception:
            query = None
    kwargs: dict[str, Any] = {
        "collections": [collection],
        "bbox": list(bbox),
        "limit": page_size,
        "max_items": max_items,
    }
    if dates is not None:
        kwargs["datetime"] = f"{dates[0]}T00:00:00Z/{dates[1]}T23:59:59Z"
    if query:
        kwargs["query"] = query
    try:
        found = list(client.search(**kwargs).items_as_dicts())
    except _request_errors() as exc:
        raise SourceUnavailable(
            f"STAC search of {collection} at {url or 'the API'} failed ({_why(exc)})"
        ) from exc
    kept, rejected = [], []
    for item in sorted(found, key=lambda i: i.get("properties", {}).get("datetime") or ""):
        props = item.get("properties", {})
        reason = None
        if dates is not None and not _in_dates(item, dates):
            reason = f"datetime {props.get('datetime')} outside {dates[0]}/{dates[1]}"
        elif platforms and str(props.get("platform", "")).lower() not in platforms:
            reason = f"platform {props.get('platform')!r} not one of {', '.join(platforms)}"
        elif max_cloud is not None and cloud_property:
            cc = props.get(cloud_property)
            if cc is None:
                reason = f"no {cloud_property}"
            elif float(cc) > max_cloud:
                reason = f"{cloud_property} {float(cc):g} > {max_cloud:g}"
        if reason:
            rejected.append({"id": str(item.get("id")), "reason": reason})
        else:
            kept.append(item)
    return SearchResult(kept, rejected, query)
