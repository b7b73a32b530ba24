"""Bundles: ``searchset`` pages, ``$everything`` pages, ``transaction-response``/``batch-response`` (pure).

Entries carry ``fullUrl`` = ``<base>/<type>/<id>`` and, in a searchset, ``search.mode`` (``match`` for what was
searched, ``include`` for resources added alongside, e.g. the Patient and Devices of ``$everything``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from teleconsult.fhir.observation import fhir_instant


def full_url(base: str, resource: Mapping[str, Any]) -> str:
    """``<base>/<resourceType>/<id>``."""
    return f"{base}/{resource['resourceType']}/{resource['id']}"


def searchset(
    base: str,
    matches: Iterable[Mapping[str, Any]],
    *,
    total: int | None,
    links: Mapping[str, str],
    now: datetime,
    includes: Iterable[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A ``searchset`` Bundle: ``links`` maps relation (self, next, previous) -> URL."""
    entries: list[dict[str, Any]] = [
        {"fullUrl": full_url(base, r), "resource": r, "search": {"mode": "match"}} for r in matches
    ]
    entries += [{"fullUrl": full_url(base, r), "resource": r, "search": {"mode": "include"}} for r in includes]
    out: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": fhir_instant(now)},
        "type": "searchset",
    }
    if total is not None:
        out["total"] = total
    out["link"] = [{"relation": rel, "url": url} for rel, url in links.items()]
    out["entry"] = entries
    return out


def response_entry(
    status: str, *, location: str | None = None, outcome: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One entry of a transaction/batch response (``status`` e.g. ``"201 Created"``)."""
    response: dict[str, Any] = {"status": status}
    if location is not None:
        response["location"] = location
    if outcome is not None:
        response["outcome"] = outcome
    return {"response": response}


def response_bundle(kind: str, entries: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """A ``transaction-response`` or ``batch-response`` Bundle."""
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": fhir_instant(now)},
        "type": f"{kind}-response",
        "entry": entries,
    }


def collection(resources: Iterable[Mapping[str, Any]], base: str, now: datetime) -> dict[str, Any]:
    """A ``collection`` Bundle (exports)."""
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": fhir_instant(now)},
        "type": "collection",
        "entry": [{"fullUrl": full_url(base, r), "resource": r} for r in resources],
    }
