"""FHIR benchmark: ``tbib bench fhir [--rows 5000000] [--json]``.

One run on this machine (server + client + database), against a `tbib server` subprocess over HTTP:
1. A fresh database (project services or ``--dsn``), ``--rows`` readings bulk-loaded with ``COPY``: background
   patients (heart rate / SpO2 over 30 days), a *search* patient with 1 000 Observations (heart rate, SpO2, temperature,
   weight, 100 blood-pressure panels), and an *everything* patient with 7 days of 1 Hz heart rate (604 800 rows).
2. ``search_p95_ms``: ``GET Observation?patient=<search patient>&_count=1000`` (every Observation of the patient in one
   searchset page), repeated after ``--warmup`` untimed ones; also a code + date range search of 100 entries
   (``search_filtered_p95_ms``).
3. ``$everything`` of the 7-day patient walked page by page (``_count=1000``): first page, p95 page, whole walk.
4. ``import_obs_per_s``: transaction Bundles of 500 Observations (+ the Device entry), built here as a PHD gateway
   would send them, POSTed by ``--clients`` concurrent clients (default 2, one bundle in flight each);
   ``lost`` = readings sent - readings stored. Then the same bundles again: ``replay_new_rows`` must be 0.
5. ``invalid_resources``: every resource of the search pages, the first and last ``$everything`` pages (all of them
   with ``--validate-all``), the first and last import responses (all with ``--validate-all``), ``metadata``,
   ``Patient``, ``$everything`` of the import patient and an error ``OperationOutcome`` parsed with ``fhir.resources``
   (R4B); ``validated_resources`` says how many.
The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import orjson
import psycopg

from teleconsult.bench.apiserver import ApiServer, percentile
from teleconsult.bench.ingest import project_dsn
from teleconsult.store.migrate import upgrade

#: Throwaway credentials of the benchmark's own database and server.
PASSWORD: Final = secrets.token_urlsafe(18)
SECRET: Final = secrets.token_urlsafe(48)
END: Final = datetime(2026, 12, 1, tzinfo=UTC)
COPY_COLS: Final = "patient_id, device_id, metric, value, unit, measured_at, reading_id, group_id"


def log(msg: str) -> None:
    """Progress on stderr (stdout is reserved for the result)."""
    print(f"bench fhir: {msg}", file=sys.stderr, flush=True)


def p95(values: Sequence[float]) -> float:
    """95th percentile (nearest rank)."""
    return percentile(values, 0.95)


def _rid(tag: int, i: int) -> str:
    return f"{tag:08x}-0000-4000-8000-{i:012x}"


def _background(patients: list[uuid.UUID], rows: int) -> Iterator[str]:
    """COPY lines: ``rows`` heart-rate/SpO2 readings spread over 30 days, round robin over the patients."""
    span = 30 * 86_400
    step = span / max(1, rows // len(patients))
    start = END - timedelta(days=30)
    for i in range(rows):
        p = patients[i % len(patients)]
        at = start + timedelta(seconds=(i // len(patients)) * step)
        metric, unit, value = ("heart_rate", "/min", 60 + i % 40) if i % 2 else ("spo2", "%", 90 + i % 10)
        yield f"{p}\t\\N\t{metric}\t{value}\t{unit}\t{at.isoformat()}\t{_rid(1, i)}\t\\N\n"


def _search_patient(p: uuid.UUID) -> Iterator[str]:
    """1 000 Observations (1 100 rows: 100 panels have a systolic and a diastolic reading) over 30 days."""
    start = END - timedelta(days=30)
    for i in range(900):
        at = (start + timedelta(minutes=47 * i)).isoformat()
        metric, unit, value = [
            ("heart_rate", "/min", 72),
            ("spo2", "%", 96),
            ("body_temperature", "Cel", 36.8),
            ("body_weight", "kg", 70.2),
        ][i % 4]
        yield f"{p}\t\\N\t{metric}\t{value}\t{unit}\t{at}\t{_rid(2, i)}\t\\N\n"
    for i in range(100):
        at = (start + timedelta(minutes=47 * i + 13)).isoformat()
        group = _rid(3, i)
        yield f"{p}\t\\N\tsystolic_bp\t{130 + i % 20}\tmm[Hg]\t{at}\t{_rid(4, i)}\t{group}\n"
        yield f"{p}\t\\N\tdiastolic_bp\t{80 + i % 10}\tmm[Hg]\t{at}\t{_rid(5, i)}\t{group}\n"


def _everything_patient(p: uuid.UUID, days: int) -> Iterator[str]:
    start = END - timedelta(days=days)
    for i in range(days * 86_400):
        at = (start + timedelta(seconds=i)).isoformat()
        yield f"{p}\t\\N\theart_rate\t{60 + i % 30}\t/min\t{at}\t{_rid(6, i)}\t\\N\n"


def bulk_load(dsn: str, lines: Iterator[str], total: int) -> float:
    """COPY ``lines`` into readings; returns the seconds it took."""
    t0 = time.perf_counter()
    done = 0
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, cur.copy(f"copy readings ({COPY_COLS}) from stdin") as cp:
        buf = io.StringIO()
        for n, line in enumerate(lines, 1):
            buf.write(line)
            if n % 50_000 == 0:
                cp.write(buf.getvalue())
                buf = io.StringIO()
                done = n
                if done % 1_000_000 == 0:
                    log(f"  {done:,}/{total:,} rows")
        cp.write(buf.getvalue())
    return time.perf_counter() - t0


def setup(dsn: str, rows: int, background_patients: int, days: int) -> dict[str, Any]:
    """Patients, devices, users, readings; returns ids and load timings."""
    from teleconsult.security import passwords

    pw = passwords.hash_password(PASSWORD)
    with psycopg.connect(dsn, autocommit=True) as conn:

        def patient(name: str) -> uuid.UUID:
            row = conn.execute("insert into patients (display_name) values (%s) returning id", (name,)).fetchone()
            assert row is not None
            return uuid.UUID(str(row[0]))

        search_p, every_p, import_p = patient("Search"), patient("Everything"), patient("Import")
        background = [patient(f"Background {i}") for i in range(background_patients)]
        for p in (search_p, every_p, import_p):  # no decision on file is no consent (reads: data_sharing)
            conn.execute(
                "insert into consents (patient_id, purpose, granted, note) values (%s, 'remote_monitoring', true,"
                " 'bench'), (%s, 'data_sharing', true, 'bench')",
                (p, p),
            )
        conn.execute("insert into gateways (id, patient_id) values ('gw-bench-import', %s)", (import_p,))
        conn.execute(
            "insert into devices (gateway_id, address, serial, kind) values"
            " ('gw-bench-import', 'AA:BB:CC:DD:EE:01', 'SN-BENCH-1', 'pulse_oximeter')"
        )
        doc = conn.execute(
            "insert into users (username, display_name, role, password_hash) values"
            " ('bench-doctor', 'Bench', 'doctor', %s) returning id",
            (pw,),
        ).fetchone()
        assert doc is not None
        for p in (search_p, every_p, import_p):
            conn.execute(
                "insert into care_team (clinician_id, patient_id, valid_from)"
                " values (%s, %s, now() - interval '1 day')",
                (doc[0], p),
            )
    fixed = 1100 + days * 86_400
    rest = max(0, rows - fixed)
    log(f"loading {rest + fixed:,} readings with COPY ({background_patients} background patients)")

    def all_lines() -> Iterator[str]:
        yield from _search_patient(search_p)
        yield from _everything_patient(every_p, days)
        yield from _background(background, rest)

    load_s = bulk_load(dsn, all_lines(), rest + fixed)
    t0 = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        # as a live database would be: vacuumed (hint bits, visibility map), so that autovacuum of the fresh chunks
        # does not run during the measurements
        conn.execute("vacuum (analyze) readings")
        count = conn.execute("select count(*) from readings").fetchone()
    log(f"loaded in {load_s:.1f} s ({(rest + fixed) / load_s:,.0f} rows/s), vacuum {time.perf_counter() - t0:.1f} s")
    return {
        "search": search_p,
        "everything": every_p,
        "import": import_p,
        "load_s": load_s,
        "rows": int(count[0]) if count else 0,
    }


class Validator:
    """Counts resources parsed with fhir.resources (R4B) and those that fail."""

    def __init__(self) -> None:
        from fhir.resources.R4B import get_fhir_model_class

        self.model = get_fhir_model_class
        self.checked = 0
        self.invalid = 0
        self.errors: list[str] = []

    def __call__(self, resource: dict[str, Any]) -> None:
        from pydantic import ValidationError

        self.checked += 1
        try:
            self.model(resource["resourceType"]).model_validate(resource)
        except (ValidationError, KeyError, ValueError) as exc:
            self.invalid += 1
            if len(self.errors) < 5:
                self.errors.append(f"{resource.get('resourceType')}: {str(exc)[:300]}")
        if resource.get("resourceType") == "Bundle":
            for e in resource.get("entry", []):
                if "resource" in e:
                    self(e["resource"])
                if "outcome" in e.get("response", {}):
                    self(e["response"]["outcome"])


def timed_get(client: httpx.Client, url: str, **params: Any) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    r = client.get(url, params=params or None)
    elapsed = (time.perf_counter() - t0) * 1000
    if r.status_code != 200:
        raise RuntimeError(f"GET {url} -> {r.status_code}: {r.text[:300]}")
    doc: dict[str, Any] = orjson.loads(r.content)
    return elapsed, doc


def import_bundles(patient: uuid.UUID, n_obs: int, size: int) -> list[bytes]:
    """Transaction Bundles of ``size`` Observations (SpO2 at 1 Hz) and the gateway's Device entry, as JSON bytes."""
    device = {
        "fullUrl": "urn:uuid:5e1f6a4c-0000-4000-8000-00000000d001",
        "resource": {
            "resourceType": "Device",
            "identifier": [{"system": "http://hl7.org/fhir/sid/eui-48/bluetooth", "value": "AA:BB:CC:DD:EE:01"}],
        },
        "request": {"method": "POST", "url": "Device"},
    }
    start = END - timedelta(days=2)
    out = []
    for b in range(0, n_obs, size):
        entries: list[dict[str, Any]] = [device]
        for i in range(b, min(n_obs, b + size)):
            entries.append(
                {
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{_rid(7, i)}"}],
                        "category": [
                            {
                                "coding": [
                                    {
                                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                        "code": "vital-signs",
                                    }
                                ]
                            }
                        ],
                        "code": {
                            "coding": [
                                {"system": "http://loinc.org", "code": "2708-6"},
                                {"system": "urn:iso:std:iso:11073:10101", "code": "150456"},
                            ]
                        },
                        "subject": {"reference": f"Patient/{patient}"},
                        "device": {"reference": device["fullUrl"]},
                        "effectiveDateTime": (start + timedelta(seconds=i)).isoformat(),
                        "valueQuantity": {
                            "value": 90 + i % 10,
                            "unit": "%",
                            "system": "http://unitsofmeasure.org",
                            "code": "%",
                        },
                    },
                    "request": {"method": "POST", "url": "Observation"},
                }
            )
        out.append(orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}))
    return out


def run(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    """All phases; the result dict."""
    ids = setup(dsn, args.rows, args.background_patients, args.everything_days)
    server = ApiServer(dsn, SECRET)
    v = Validator()
    result: dict[str, Any] = {"rows": ids["rows"], "load_s": round(ids["load_s"], 1)}
    try:
        token = httpx.post(
            f"{server.url}/api/v1/auth/login", json={"username": "bench-doctor", "password": PASSWORD}, timeout=30
        ).json()["access_token"]
        client = httpx.Client(
            base_url=f"{server.url}/fhir/r4", headers={"Authorization": f"Bearer {token}"}, timeout=120
        )
        base = f"{server.url}/fhir/r4"
        for path in ("metadata", f"Patient/{ids['search']}", f"Patient/{ids['import']}"):
            v(timed_get(client, f"{base}/{path}")[1])
        v(orjson.loads(client.get(f"{base}/Observation", params={"patient": str(ids["search"]), "foo": "1"}).content))
        devices = timed_get(client, f"{base}/Patient/{ids['import']}/$everything", _count="1")[1]
        v(devices)
        # search: all 1 000 Observations of one patient in one page
        log(f"search: {args.searches} x Observation?patient=..&_count=1000 out of {ids['rows']:,} rows")
        for _ in range(args.warmup):  # a running server is warm: pooled connections, prepared statements
            timed_get(client, f"{base}/Observation", patient=str(ids["search"]), _count="1000")
        times = []
        for i in range(args.searches):
            ms, doc = timed_get(client, f"{base}/Observation", patient=str(ids["search"]), _count="1000")
            times.append(ms)
            if i == 0:
                if doc.get("total") != 1000 or len(doc["entry"]) != 1000:
                    raise RuntimeError(f"search returned {doc.get('total')} / {len(doc['entry'])}, expected 1000")
                v(doc)
        result |= {
            "search_p50_ms": round(statistics.median(times), 1),
            "search_p95_ms": round(p95(times), 1),
            "search_entries": 1000,
        }
        lo, hi = (END - timedelta(days=20)).isoformat(), (END - timedelta(days=5)).isoformat()
        ftimes = []
        for _ in range(args.searches):
            ms, doc = timed_get(
                client,
                f"{base}/Observation",
                patient=str(ids["search"]),
                code="8867-4",
                date=[f"ge{lo}", f"le{hi}"],
                _count="100",
            )
            ftimes.append(ms)
        v(doc)
        result["search_filtered_p95_ms"] = round(p95(ftimes), 1)
        log(
            f"  p50 {result['search_p50_ms']} ms, p95 {result['search_p95_ms']} ms; filtered p95 "
            f"{result['search_filtered_p95_ms']} ms"
        )
        # $everything, 7 days at 1 Hz, paged
        log(f"$everything: {args.everything_days} days at 1 Hz, _count=1000, walking every page")
        start = (END - timedelta(days=args.everything_days)).date().isoformat()
        t0 = time.perf_counter()
        ms, doc = timed_get(client, f"{base}/Patient/{ids['everything']}/$everything", start=start, _count="1000")
        v(doc)
        pages, seen, page_ms = 1, len(doc["entry"]), [ms]
        nxt = next((link["url"] for link in doc["link"] if link["relation"] == "next"), None)
        while nxt and (args.everything_pages == 0 or pages < args.everything_pages):
            ms, doc = timed_get(client, nxt)
            page_ms.append(ms)
            if args.validate_all:
                v(doc)
            pages += 1
            seen += len(doc["entry"])
            nxt = next((link["url"] for link in doc["link"] if link["relation"] == "next"), None)
        walk_s = time.perf_counter() - t0
        if pages > 1 and not args.validate_all:
            v(doc)
        result |= {
            "everything_first_page_ms": round(page_ms[0], 1),
            "everything_page_p95_ms": round(p95(page_ms), 1),
            "everything_pages": pages,
            "everything_entries": seen,
            "everything_walk_s": round(walk_s, 1),
            "everything_complete": nxt is None,
        }
        log(
            f"  {pages} pages, {seen:,} entries in {walk_s:.1f} s; first page {page_ms[0]:.0f} ms, "
            f"p95 page {p95(page_ms):.0f} ms"
        )
        # import
        bundles = import_bundles(ids["import"], args.import_obs, 500)
        log(f"import: {len(bundles)} transaction bundles of 500 Observations")

        def stored() -> int:
            with psycopg.connect(dsn, autocommit=True) as conn:
                row = conn.execute("select count(*) from readings where patient_id = %s", (ids["import"],)).fetchone()
            return int(row[0]) if row else 0

        headers = {"Content-Type": "application/fhir+json", "Authorization": f"Bearer {token}"}
        responses: dict[int, dict[str, Any]] = {}

        def send(worker: int, check: str) -> None:
            with httpx.Client(timeout=120, headers=headers) as c:
                for i in range(worker, len(bundles), args.clients):
                    r = c.post(base, content=bundles[i])
                    if r.status_code != 200:
                        raise RuntimeError(f"bundle {i}: {r.status_code} {r.text[:300]}")
                    doc = orjson.loads(r.content)
                    statuses = {e["response"]["status"] for e in doc["entry"][1:]}
                    if statuses != {check}:
                        raise RuntimeError(f"bundle {i}: statuses {statuses}, expected {check}")
                    if args.validate_all or i in (0, len(bundles) - 1):
                        responses[i] = doc

        def post_all(check: str) -> float:
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                for f in [pool.submit(send, w, check) for w in range(args.clients)]:
                    f.result()
            elapsed = time.perf_counter() - t0
            for doc in responses.values():
                v(doc)
            return elapsed

        elapsed = post_all("201 Created")
        after = stored()
        replay_s = post_all("200 OK")
        result |= {
            "import_obs_per_s": round(args.import_obs / elapsed),
            "import_bundles": len(bundles),
            "lost": args.import_obs - after,
            "replay_new_rows": stored() - after,
            "replay_obs_per_s": round(args.import_obs / replay_s),
        }
        log(
            f"  {result['import_obs_per_s']:,} obs/s, lost {result['lost']}, replay new rows "
            f"{result['replay_new_rows']}"
        )
    finally:
        server.close()
    result |= {"invalid_resources": v.invalid, "validated_resources": v.checked}
    if v.errors:
        log("invalid: " + " | ".join(v.errors))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; the last stdout line is the JSON result."""
    ap = argparse.ArgumentParser(prog="tbib bench fhir", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=5_000_000, help="readings in the database (default 5 000 000)")
    ap.add_argument("--background-patients", type=int, default=200, help="patients holding the other rows")
    ap.add_argument("--searches", type=int, default=100, help="repetitions of each search (default 100)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed searches first (default 20)")
    ap.add_argument("--everything-days", type=int, default=7, help="days of 1 Hz heart rate for $everything (7)")
    ap.add_argument("--everything-pages", type=int, default=0, help="stop $everything after N pages (0: all)")
    ap.add_argument("--import-obs", type=int, default=50_000, help="Observations imported (default 50 000)")
    ap.add_argument("--clients", type=int, default=2, help="concurrent importing clients (default 2)")
    ap.add_argument("--validate-all", action="store_true", help="validate every $everything page and import answer")
    ap.add_argument("--dsn", help="server DSN to create the benchmark database in (default: project services)")
    ap.add_argument("--plain", action="store_true", help="plain PostgreSQL schema instead of TimescaleDB")
    ap.add_argument("--keep-db", action="store_true", help="do not drop the benchmark database")
    ap.add_argument("--json", action="store_true", help="print only the JSON result on stdout")
    args = ap.parse_args(argv)
    server_dsn = args.dsn or project_dsn()
    name = f"tbib_bench_fhir_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    dsn = urlsplit(server_dsn)._replace(path="/" + name).geturl()
    load0 = os.getloadavg()[0]
    try:
        upgrade(dsn, timescaledb=not args.plain)
        result = {"flavour": "plain" if args.plain else "timescaledb"} | run(dsn, args)
    finally:
        if not args.keep_db:
            with psycopg.connect(server_dsn, autocommit=True) as conn:
                conn.execute(f'drop database if exists "{name}" with (force)')
    result["loadavg_1m_before"] = round(load0, 2)
    result["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    if not args.json:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    print(orjson.dumps(result).decode())
    return 0
