"""`tbib fhir export|import`: a patient's record as a FHIR R4 Bundle file, and Bundle files into tbib.

- ``tbib fhir export PATIENT_ID [--since 2026-11-01] [--until ...] > bundle.json``: a ``collection`` Bundle with the
  Patient, the gateway and devices (Device), open alerts (Flag) and every Observation measured in the window, oldest
  first, streamed page by page (constant memory). Audited (action ``export``). The file leaves tbib: it needs the
  patient's ``data_sharing`` consent (no decision on file is no consent; a refusal is audited as denied), unless
  ``--for-patient`` says it is handed to the patient themself (their right of access, law 09-08).
- ``tbib fhir import bundle.json``: a ``transaction``, ``batch`` or ``collection`` Bundle (an export imports back as
  a no-op). Observations go in chunks of ``--chunk`` entries (default 500), each chunk one transaction through the same
  code as ``POST /fhir/r4`` (the Device entries ride along with every chunk); ``--batch`` accepts the valid entries of a
  chunk with an invalid one. A progress line on stderr; one line per rejected entry (``entry 17: <where>: <why>``);
  exit 1 when any entry was rejected. The operator is trusted as the database owner; each patient written to is audited
  with the actor ``cli:<os user>``.

Both talk to the database (``--database-url`` or the server settings), not to a running server.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import re
import sys
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

from teleconsult.cli._db import add_db_arguments, database_url
from teleconsult.cli.common import CliError

DEFAULT_BASE: Final = "urn:tbib:fhir"
_ENTRY_RE: Final = re.compile(r"^Bundle\.entry\[(\d+)\]")


def add_parser(sub: Any) -> None:
    """Register `tbib fhir`."""
    p: argparse.ArgumentParser = sub.add_parser(
        "fhir", help="FHIR R4 export/import of Bundle files", description=__doc__
    )
    cmds = p.add_subparsers(dest="fhir_command", metavar="ACTION", required=True)
    e = cmds.add_parser("export", help="write a patient's record as a FHIR collection Bundle (stdout)")
    e.add_argument("patient_id", help="tbib patient id (uuid)")
    e.add_argument("--since", help="first measurement time (FHIR date or dateTime, e.g. 2026-11-01)")
    e.add_argument("--until", help="last measurement day/time (inclusive)")
    e.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    e.add_argument("--base-url", default=DEFAULT_BASE, help="fullUrl base of the entries (default %(default)s)")
    e.add_argument(
        "--for-patient",
        action="store_true",
        help="the file is for the patient themself (right of access): no data_sharing consent needed",
    )
    add_db_arguments(e)
    e.set_defaults(func=run_export)
    i = cmds.add_parser("import", help="import a transaction/batch/collection Bundle file")
    i.add_argument("file", type=Path, help="Bundle JSON file ('-' for stdin)")
    i.add_argument("--chunk", type=int, default=500, help="Observations per transaction (default %(default)s)")
    i.add_argument("--batch", action="store_true", help="keep the valid entries of a chunk that has invalid ones")
    i.add_argument("--quiet", action="store_true", help="no progress line")
    add_db_arguments(i)
    i.set_defaults(func=run_import)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


# ------------------------------------------------------------------------------------------------------------ export


async def export(
    dsn: str,
    patient_id: uuid.UUID,
    out: IO[str],
    *,
    since: str | None,
    until: str | None,
    base: str,
    for_patient: bool = False,
) -> int:
    """Stream the collection Bundle to ``out``; returns the number of Observations written."""
    import orjson
    from psycopg import AsyncConnection

    from teleconsult.fhir import search
    from teleconsult.fhir import store as fstore
    from teleconsult.fhir.observation import fhir_instant, observation
    from teleconsult.fhir.resources import (
        device_resource,
        flag_resource,
        gateway_device_id,
        gateway_resource,
        patient_resource,
    )
    from teleconsult.security import audit as audit_log
    from teleconsult.security.consent import has_consent
    from teleconsult.security.models import ConsentPurpose

    now = datetime.now(UTC)
    params = [("start", since)] if since else []
    params += [("end", until)] if until else []
    q = search.observation_query(params, now=now, patient_id=patient_id)
    count = 0
    async with await AsyncConnection.connect(dsn) as conn:
        record = await fstore.get_patient(conn, patient_id)
        if record is None:
            raise CliError(f"patient {patient_id} not found")
        if not for_patient and not await has_consent(conn, patient_id, ConsentPurpose.DATA_SHARING):
            await _audit_export(dsn, patient_id, audit_log.DENIED, {"reason": "no data_sharing consent"})
            raise CliError(
                f"patient {patient_id} has no data_sharing consent in force: not exported"
                " (--for-patient when the file is handed to the patient themself)"
            )
        devices, gateways = await fstore.patient_devices(conn, patient_id)
        head = [patient_resource(record)]
        head += [gateway_resource(g) for g in gateways if gateway_device_id(g.id)]
        head += [device_resource(d) for d in devices]
        head += [flag_resource(a) for a in await fstore.open_alerts(conn, patient_id)]
        await conn.commit()
        meta = {
            "resourceType": "Bundle",
            "id": str(uuid.uuid4()),
            "meta": {"lastUpdated": fhir_instant(now)},
            "type": "collection",
        }
        out.write(orjson.dumps(meta).decode()[:-1] + ',"entry":[')
        first = True

        def emit(resource: dict[str, Any]) -> None:
            nonlocal first
            entry = {"fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}", "resource": resource}
            out.write(("" if first else ",\n") + orjson.dumps(entry).decode())
            first = False

        for r in head:
            emit(r)
        while True:
            page = await fstore.search_readings(conn, q)
            await conn.commit()
            for anchor in page.anchors:
                emit(observation(anchor, page.companions.get(anchor.group_id, []) if anchor.group_id else []))
            count += len(page.anchors)
            if not page.has_more or not page.anchors:
                break
            keys = [(r.measured_at, r.reading_id) for r in page.anchors]
            q = replace(q, cursor=search.next_cursor(q, keys, None))
        out.write("]}\n")
    basis = "patient_request" if for_patient else "data_sharing"
    await _audit_export(dsn, patient_id, audit_log.ALLOWED, {"observations": count, "basis": basis})
    return count


async def _audit_export(dsn: str, patient_id: uuid.UUID, outcome: str, detail: dict[str, Any]) -> None:
    from psycopg_pool import AsyncConnectionPool

    from teleconsult.api.deps import audit

    async with AsyncConnectionPool(dsn, min_size=1, max_size=1, open=False) as pool:
        await audit(
            pool,
            None,
            action="export",
            resource="tbib fhir export",
            outcome=outcome,
            patient_id=patient_id,
            actor_username=_actor(),
            detail=detail,
        )


def run_export(args: argparse.Namespace) -> int:
    """CLI entry."""
    import psycopg

    from teleconsult.fhir.errors import FhirError

    try:
        patient_id = uuid.UUID(args.patient_id)
    except ValueError:
        raise CliError(f"{args.patient_id!r} is not a patient id (uuid)") from None
    out: IO[str] = args.output.open("w", encoding="utf-8") if args.output else sys.stdout
    try:
        n = asyncio.run(
            export(
                database_url(args),
                patient_id,
                out,
                since=args.since,
                until=args.until,
                base=args.base_url,
                for_patient=args.for_patient,
            )
        )
    except FhirError as exc:
        raise CliError(f"{exc.expression}: {exc.message}" if exc.expression else exc.message) from exc
    except psycopg.Error as exc:
        raise CliError(f"database error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    finally:
        if args.output:
            out.close()
    print(f"exported {n} observations of patient {patient_id}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------------------ import


def chunks(entries: Sequence[dict[str, Any]], size: int) -> list[tuple[list[int], list[dict[str, Any]]]]:
    """Split a Bundle's entries: every chunk gets all Device entries plus up to ``size`` Observations.

    Returns ``(file indexes, entries)`` per chunk; other resource types (Patient, Flag of an export) are left out.
    """
    devices = [(i, e) for i, e in enumerate(entries) if (e.get("resource") or {}).get("resourceType") == "Device"]
    others = [(i, e) for i, e in enumerate(entries) if (e.get("resource") or {}).get("resourceType") == "Observation"]
    out = []
    for start in range(0, len(others), size):
        part = devices + others[start : start + size]
        out.append(([i for i, _ in part], [e for _, e in part]))
    return out


def _file_where(expression: str | None, indexes: list[int]) -> tuple[int | None, str]:
    if not expression:
        return None, ""
    m = _ENTRY_RE.match(expression)
    if m is None:
        return None, expression
    i = indexes[int(m.group(1))]
    return i, f"Bundle.entry[{i}]{expression[m.end() :]}"


async def import_file(doc: Any, dsn: str, *, chunk: int, batch: bool, progress: IO[str] | None) -> dict[str, int]:
    """Import a parsed Bundle; returns counts (created, existing, rejected, skipped)."""
    from psycopg_pool import AsyncConnectionPool

    from teleconsult.api.deps import audit
    from teleconsult.fhir.transaction import import_bundle
    from teleconsult.security import audit as audit_log

    if not isinstance(doc, dict) or doc.get("resourceType") != "Bundle":
        raise CliError("the file is not a FHIR Bundle")
    if doc.get("type") not in {"transaction", "batch", "collection"}:
        raise CliError(f"Bundle.type {doc.get('type')!r}: expected transaction, batch or collection")
    entries = doc.get("entry") or []
    parts = chunks(entries, chunk)
    kind = "batch" if batch or doc.get("type") == "batch" else "transaction"
    counts = {"created": 0, "existing": 0, "rejected": 0, "skipped": 0}
    counts["skipped"] = len(entries) - len({i for idx, _ in parts for i in idx})
    total = sum(1 for e in entries if (e.get("resource") or {}).get("resourceType") == "Observation")
    done = 0
    audited: set[uuid.UUID] = set()
    async with AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False) as pool:

        async def authorize(patient_id: uuid.UUID, n: int) -> None:
            if patient_id not in audited:
                audited.add(patient_id)
                await audit(
                    pool,
                    None,
                    action=audit_log.WRITE,
                    resource="tbib fhir import",
                    outcome=audit_log.ALLOWED,
                    patient_id=patient_id,
                    actor_username=_actor(),
                    detail={"entries": n},
                )

        for indexes, part in parts:
            bundle = {"resourceType": "Bundle", "type": kind, "entry": part}
            status, answer = await import_bundle(
                pool, bundle, authorize=authorize, base=DEFAULT_BASE, now=datetime.now(UTC)
            )
            observations = sum(1 for e in part if e["resource"].get("resourceType") == "Observation")
            if answer["resourceType"] == "OperationOutcome":
                bad = set()
                for issue in answer["issue"]:
                    expr = (issue.get("expression") or [None])[0]
                    i, where = _file_where(expr, indexes)
                    bad.add(i)
                    print(f"entry {i}: {where}: {issue.get('diagnostics')}", file=sys.stderr)
                counts["rejected"] += observations
                print(
                    f"chunk of entries {indexes[0]}..{indexes[-1]} refused (HTTP {status}): nothing written "
                    f"({len(bad)} invalid entries; --batch keeps the valid ones)",
                    file=sys.stderr,
                )
            else:
                for local, e in enumerate(answer["entry"]):
                    resp = e["response"]
                    if part[local]["resource"].get("resourceType") != "Observation":
                        continue
                    if resp["status"].startswith("201"):
                        counts["created"] += 1
                    elif resp["status"].startswith("200"):
                        counts["existing"] += 1
                    else:
                        counts["rejected"] += 1
                        for issue in resp.get("outcome", {}).get("issue", []):
                            _, where = _file_where((issue.get("expression") or [None])[0], indexes)
                            print(f"entry {indexes[local]}: {where}: {issue.get('diagnostics')}", file=sys.stderr)
            done += observations
            if progress is not None and total:
                bar = "#" * (30 * done // total)
                progress.write(f"\r[{bar:<30}] {done}/{total} observations")
                progress.flush()
    if progress is not None and total:
        progress.write("\n")
    return counts


def run_import(args: argparse.Namespace) -> int:
    """CLI entry."""
    import orjson
    import psycopg

    if args.chunk < 1:
        raise CliError("--chunk must be at least 1")
    try:
        raw = sys.stdin.buffer.read() if str(args.file) == "-" else args.file.read_bytes()
        doc = orjson.loads(raw)
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from exc
    except orjson.JSONDecodeError as exc:
        raise CliError(f"{args.file} is not JSON: {exc}") from exc
    progress = None if args.quiet or not sys.stderr.isatty() else sys.stderr
    try:
        counts = asyncio.run(
            import_file(doc, database_url(args), chunk=args.chunk, batch=args.batch, progress=progress)
        )
    except psycopg.Error as exc:
        raise CliError(f"database error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    print(
        f"imported {counts['created']} new observations, {counts['existing']} already stored, "
        f"{counts['rejected']} rejected, {counts['skipped']} other entries skipped"
    )
    return 1 if counts["rejected"] else 0
