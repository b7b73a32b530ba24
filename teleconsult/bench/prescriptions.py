"""Prescriptions benchmark: ``tbib bench prescriptions [--prescriptions 50] [--attempts 200] [--json]``.

One run on this machine against a `tbib server` subprocess over HTTP, in a fresh database (project services or
``--dsn``):
1. A doctor (with a registration number), ``--prescriptions`` patients each with one issued prescription (POST as the
   doctor: checked, signed, stored) of ``--lines`` lines of 2 boxes renewable once (4 boxes per line in all), and
   ``--pharmacies`` pharmacies with one pharmacist account each.
2. ``--attempts`` dispense attempts, each of one whole fill (2 boxes) of a random line of a random prescription by a
   random pharmacy, run by ``--concurrency`` clients at once (attempts on the same prescription overlap), so about half
   must be refused with 409. ``over_dispensed`` = boxes dispensed beyond what was prescribed, counted from the
   dispense records (not from the counter); ``counter_mismatch`` = lines whose counter differs from those records.
   ``dispense_p95_ms`` over every attempt (201 and 409 alike); baseline in the same run: ``lookup_p95_ms`` of
   ``POST /pharmacy/lookup`` (same authentication and access-code check, no lock, no write).
3. Tamper: one stored line is changed in the database; ``tamper_view_invalid`` (the read shows the signature invalid)
   and ``tamper_dispense_rejected`` (its dispense answers 409 ``signature_invalid``) must both be true.
The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import orjson
import psycopg

from teleconsult.bench.apiserver import ApiServer, percentile
from teleconsult.bench.ingest import project_dsn
from teleconsult.security.passwords import hash_password
from teleconsult.store.migrate import upgrade

PASSWORD: Final = secrets.token_urlsafe(18)
SECRET: Final = secrets.token_urlsafe(48)
FORMULARY: Final = ("paracetamol-500mg-comprime", "ibuprofene-400mg-comprime", "omeprazole-20mg-gelule")


def log(msg: str) -> None:
    """Progress on stderr (stdout is reserved for the result)."""
    print(f"bench prescriptions: {msg}", file=sys.stderr, flush=True)


def start_server(dsn: str, key_dir: Path) -> ApiServer:
    """``tbib server`` signing with a key in a temporary directory."""
    ext = orjson.dumps({"prescriptions": {"signing_key_file": str(key_dir / "signing.pem")}}).decode()
    return ApiServer(dsn, SECRET, {"TBIB_EXT": ext, "TBIB_DB_POOL_MAX_SIZE": "10"})


def seed(dsn: str, patients: int, pharmacies: int) -> tuple[list[uuid.UUID], list[str]]:
    """Doctor, patients on the doctor's care team, pharmacies with a pharmacist each; returns (patients, usernames)."""
    pw = hash_password(PASSWORD)
    with psycopg.connect(dsn, autocommit=True) as conn:
        doctor = conn.execute(
            "insert into users (username, display_name, role, password_hash, registration_number) "
            "values ('bench-doctor', 'Dr Bench', 'doctor', %s, 'INPE 000000001') returning id",
            (pw,),
        ).fetchone()
        assert doctor is not None
        pids = []
        for i in range(patients):
            row = conn.execute(
                "insert into patients (display_name, birth_date) values (%s, '1960-01-01') returning id",
                (f"Patient {i:03d}",),
            ).fetchone()
            assert row is not None
            pids.append(row[0])
            conn.execute("insert into care_team (clinician_id, patient_id) values (%s, %s)", (doctor[0], row[0]))
        names = []
        for j in range(pharmacies):
            ph = conn.execute(
                "insert into pharmacies (name, city) values (%s, 'Rabat') returning id", (f"Pharmacie {j}",)
            ).fetchone()
            assert ph is not None
            conn.execute(
                "insert into users (username, display_name, role, password_hash, pharmacy_id) "
                "values (%s, %s, 'pharmacist', %s, %s)",
                (f"bench-pharm-{j}", f"Pharmacien {j}", pw, ph[0]),
            )
            names.append(f"bench-pharm-{j}")
    return pids, names


def login(url: str, username: str) -> str:
    """An access token."""
    r = httpx.post(f"{url}/api/v1/auth/login", json={"username": username, "password": PASSWORD}, timeout=30)
    r.raise_for_status()
    token: str = r.json()["access_token"]
    return token


def run(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    """All phases; the result dict."""
    patients, pharmacists = seed(dsn, args.prescriptions, args.pharmacies)
    key_dir = Path(tempfile.mkdtemp(prefix="tbib-bench-rx-"))
    server = start_server(dsn, key_dir)
    try:
        doctor = httpx.Client(
            base_url=f"{server.url}/api/v1",
            headers={"Authorization": f"Bearer {login(server.url, 'bench-doctor')}"},
            timeout=60,
        )
        rxs: list[tuple[str, str, int]] = []
        issue_ms = []
        for pid in patients:
            lines = [
                {"formulary_id": FORMULARY[k % len(FORMULARY)], "dose": 1, "dose_unit": "comprimé", "times_per_day": 2,
                 "duration_days": 10, "quantity": 2, "repeats": 1}
                for k in range(args.lines)
            ]  # fmt: skip
            t0 = time.perf_counter()
            r = doctor.post(f"/patients/{pid}/prescriptions", json={"lines": lines})
            issue_ms.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            body = r.json()
            rxs.append((body["id"], body["access_code"], len(body["lines"])))
        log(f"issued {len(rxs)} prescriptions, p95 {percentile(issue_ms, 0.95):.1f} ms")
        tokens = [login(server.url, n) for n in pharmacists]
        clients = [
            httpx.Client(base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {t}"}, timeout=60)
            for t in tokens
        ]
        rng = random.Random(args.seed)
        # baseline: lookups (authentication + access-code check + read), same concurrency
        lookups = [(rng.choice(clients), rng.choice(rxs)) for _ in range(args.attempts)]

        def lookup(job: tuple[httpx.Client, tuple[str, str, int]]) -> float:
            c, (rx_id, code, _) = job
            t0 = time.perf_counter()
            r = c.post("/pharmacy/lookup", json={"prescription_id": rx_id, "access_code": code})
            ms = (time.perf_counter() - t0) * 1000
            if r.status_code != 200:
                raise RuntimeError(f"lookup -> {r.status_code} {r.text[:200]}")
            return ms

        with ThreadPoolExecutor(args.concurrency) as pool:
            lookup_ms = list(pool.map(lookup, lookups))
        attempts = [(rng.choice(clients), rng.choice(rxs), rng.randrange(args.lines) + 1) for _ in range(args.attempts)]
        statuses: Counter[str] = Counter()
        lock = threading.Lock()

        def dispense(job: tuple[httpx.Client, tuple[str, str, int], int]) -> float:
            c, (rx_id, code, _), line_no = job
            body = {"access_code": code, "lines": [{"line_no": line_no, "quantity": 2, "batch": "BENCH"}]}
            t0 = time.perf_counter()
            r = c.post(f"/pharmacy/prescriptions/{rx_id}/dispense", json=body)
            ms = (time.perf_counter() - t0) * 1000
            detail = r.json().get("detail") if r.status_code != 201 else None
            key = str(r.status_code) + (f" {detail.get('code')}" if isinstance(detail, dict) else "")
            with lock:
                statuses[key] += 1
            return ms

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            dispense_ms = list(pool.map(dispense, attempts))
        wall_s = time.perf_counter() - t0
        with psycopg.connect(dsn, autocommit=True) as conn:
            over = conn.execute(
                "select coalesce(sum(greatest(0, coalesce(d.q, 0) - l.quantity * (1 + l.repeats))), 0), "
                "count(*) filter (where coalesce(d.q, 0) <> l.dispensed), coalesce(sum(d.q), 0) "
                "from prescription_lines l left join (select d.prescription_id, dl.line_no, sum(dl.quantity) q "
                "from dispenses d join dispense_lines dl on dl.dispense_id = d.id group by 1, 2) d "
                "on d.prescription_id = l.prescription_id and d.line_no = l.line_no"
            ).fetchone()
            assert over is not None
            # tamper with one line of the first prescription (a quantity rewritten behind the server's back)
            victim, victim_code, _ = rxs[0]
            conn.execute("update prescriptions set revision = 0 where id = %s", (victim,))
            conn.execute(
                "update prescription_lines set quantity = quantity + 5 where prescription_id = %s and line_no = 1",
                (victim,),
            )
        view = doctor.get(f"/prescriptions/{victim}").json()
        tampered = clients[0].post(
            f"/pharmacy/prescriptions/{victim}/dispense",
            json={"access_code": victim_code, "lines": [{"line_no": 1, "quantity": 1}]},
        )
        tamper_detail = tampered.json().get("detail") if tampered.status_code == 409 else None
        prescribed = args.prescriptions * args.lines * 4
        return {
            "prescriptions": len(rxs),
            "lines_per_prescription": args.lines,
            "pharmacies": args.pharmacies,
            "attempts": args.attempts,
            "concurrency": args.concurrency,
            "statuses": dict(sorted(statuses.items())),
            "succeeded": statuses.get("201", 0),
            "boxes_prescribed": prescribed,
            "boxes_dispensed": int(over[2]),
            "over_dispensed": int(over[0]),
            "counter_mismatch": int(over[1]),
            "dispense_p50_ms": round(statistics.median(dispense_ms), 1),
            "dispense_p95_ms": round(percentile(dispense_ms, 0.95), 1),
            "dispense_max_ms": round(max(dispense_ms), 1),
            "dispense_wall_s": round(wall_s, 2),
            "lookup_p95_ms": round(percentile(lookup_ms, 0.95), 1),
            "dispense_to_lookup_p95": round(percentile(dispense_ms, 0.95) / percentile(lookup_ms, 0.95), 2),
            "issue_p95_ms": round(percentile(issue_ms, 0.95), 1),
            "tamper_view_invalid": view["signature"]["valid"] is False,
            "tamper_dispense_rejected": isinstance(tamper_detail, dict)
            and tamper_detail.get("code") == "signature_invalid",
        }
    finally:
        server.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; the last stdout line is the JSON result (exit 1 if a guarantee failed)."""
    ap = argparse.ArgumentParser(prog="tbib bench prescriptions", description=__doc__.split("\n\n")[0])
    ap.add_argument("--prescriptions", type=int, default=50, help="prescriptions, one per patient (default 50)")
    ap.add_argument("--lines", type=int, default=1, choices=(1, 2, 3), help="lines per prescription (default 1)")
    ap.add_argument("--attempts", type=int, default=200, help="dispense attempts (default 200)")
    ap.add_argument("--concurrency", type=int, default=8, help="attempts in flight at once (default 8)")
    ap.add_argument("--pharmacies", type=int, default=4, help="pharmacies, one pharmacist each (default 4)")
    ap.add_argument("--seed", type=int, default=18, help="random seed of the attempt order")
    ap.add_argument("--dsn", help="server DSN to create the benchmark database in (default: project services)")
    ap.add_argument("--keep-db", action="store_true", help="do not drop the benchmark database")
    ap.add_argument("--json", action="store_true", help="print only the JSON result on stdout")
    args = ap.parse_args(argv)
    server_dsn = args.dsn or project_dsn()
    name = f"tbib_bench_rx_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    dsn = urlsplit(server_dsn)._replace(path="/" + name).geturl()
    load0 = os.getloadavg()[0]
    try:
        upgrade(dsn)
        result = run(dsn, args)
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
    ok = result["over_dispensed"] == 0 and result["counter_mismatch"] == 0
    ok = ok and result["tamper_view_invalid"] and result["tamper_dispense_rejected"]
    return 0 if ok else 1
