"""`tbib pki`: development certificate authority, and gateway/service credentials on the MQTT broker.

  tbib pki init --dir config/pki --host localhost --host 127.0.0.1     # CA + broker.crt + server.crt
  tbib pki issue NAME --dir config/pki --host mqtt.example.org           # another leaf certificate
  tbib pki enroll-gateway gw-0001 [--patient-id UUID]                    # prints the gateway's secret once
  tbib pki revoke-gateway gw-0001                                        # refused by the broker from now on
  tbib pki add-service tbib-ingest                                       # server-side broker account
  tbib pki gateways | tbib pki sync-broker

Broker files: ``--passwd-file/--acl-file/--pid-file`` or TBIB_MOSQUITTO_PASSWD_FILE / _ACL_FILE / _PID_FILE; after
each change both files are rewritten from the database and the broker gets SIGHUP (no restart).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path
from typing import Any

from teleconsult.cli._db import add_db_arguments, database_url
from teleconsult.cli.common import CliError, print_json


def add_parser(sub: Any) -> None:
    """Register `tbib pki`."""
    p: argparse.ArgumentParser = sub.add_parser(
        "pki",
        help="development CA and gateway broker credentials",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmds = p.add_subparsers(dest="pki_command", metavar="ACTION", required=True)

    init = cmds.add_parser("init", help="create a development CA and broker/server certificates")
    init.add_argument("--dir", type=Path, default=Path("config/pki"), help="output directory (default config/pki)")
    init.add_argument("--host", action="append", help="DNS name or IP of the broker/server (repeat; default localhost)")
    init.set_defaults(func=_init)

    iss = cmds.add_parser("issue", help="issue one more certificate from the development CA")
    iss.add_argument("name", help="file stem, e.g. broker or server")
    iss.add_argument("--dir", type=Path, default=Path("config/pki"))
    iss.add_argument("--host", action="append", required=True)
    iss.set_defaults(func=_issue)

    enr = cmds.add_parser("enroll-gateway", help="create or re-key a gateway identity; prints its secret once")
    enr.add_argument("gateway_id")
    enr.add_argument("--patient-id", type=uuid.UUID, help="the patient this gateway belongs to")
    _broker_args(enr)
    enr.set_defaults(func=_enroll)

    rev = cmds.add_parser("revoke-gateway", help="revoke a gateway's broker credentials")
    rev.add_argument("gateway_id")
    _broker_args(rev)
    rev.set_defaults(func=_revoke)

    svc = cmds.add_parser("add-service", help="create or re-key a server-side broker account; prints its secret")
    svc.add_argument("username")
    _broker_args(svc)
    svc.set_defaults(func=_service)

    ls = cmds.add_parser("gateways", help="list gateway identities")
    ls.add_argument("--json", action="store_true")
    add_db_arguments(ls)
    ls.set_defaults(func=_list)

    syn = cmds.add_parser("sync-broker", help="rewrite the broker's password and ACL files and reload it")
    _broker_args(syn)
    syn.set_defaults(func=_sync)


def _broker_args(p: argparse.ArgumentParser) -> None:
    add_db_arguments(p)
    p.add_argument("--passwd-file", type=Path, help="Mosquitto password_file to rewrite")
    p.add_argument("--acl-file", type=Path, help="Mosquitto acl_file to rewrite")
    p.add_argument("--pid-file", type=Path, help="broker pid file (SIGHUP after rewriting)")


def _files(args: argparse.Namespace) -> Any:
    from teleconsult.security.enrolment import BrokerFiles

    passwd, acl, pid = args.passwd_file, args.acl_file, args.pid_file
    if passwd is None or acl is None:
        from teleconsult.errors import ConfigError
        from teleconsult.settings import load_settings

        try:
            s = load_settings(args.config)
        except ConfigError as exc:
            raise CliError(str(exc)) from exc
        passwd, acl, pid = passwd or s.mosquitto_passwd_file, acl or s.mosquitto_acl_file, pid or s.mosquitto_pid_file
    if passwd is None or acl is None:
        return None
    return BrokerFiles(passwd_file=passwd, acl_file=acl, pid_file=pid)


def _with_db(args: argparse.Namespace, action: Any) -> int:
    import psycopg

    from teleconsult.errors import TeleconsultError

    try:
        with psycopg.connect(database_url(args), autocommit=True) as conn:
            code: int = action(conn)
    except TeleconsultError as exc:
        raise CliError(str(exc)) from exc
    except psycopg.OperationalError as exc:
        raise CliError(f"cannot reach the database: {str(exc).splitlines()[0]}") from exc
    return code


def _sync_report(conn: Any, args: argparse.Namespace) -> None:
    from teleconsult.security.enrolment import sync_broker

    files = _files(args)
    if files is None:
        print("note: no broker files configured (--passwd-file/--acl-file); run `tbib pki sync-broker` later")
        return
    signalled = sync_broker(conn, files)
    print(f"wrote {files.passwd_file} and {files.acl_file}; broker {'reloaded' if signalled else 'not signalled'}")


def _init(args: argparse.Namespace) -> int:
    from teleconsult.security import pki

    hosts = args.host or ["localhost", "127.0.0.1"]
    ca = pki.init_ca(args.dir)
    broker = pki.issue(args.dir, "broker", hosts)
    server = pki.issue(args.dir, "server", hosts)
    print(f"CA {ca}\nbroker {broker[0]} {broker[1]}\nserver {server[0]} {server[1]}")
    return 0


def _issue(args: argparse.Namespace) -> int:
    from teleconsult.errors import TeleconsultError
    from teleconsult.security import pki

    try:
        crt, key = pki.issue(args.dir, args.name, args.host)
    except TeleconsultError as exc:
        raise CliError(str(exc)) from exc
    print(f"{crt} {key}")
    return 0


def _enroll(args: argparse.Namespace) -> int:
    from teleconsult.security.enrolment import enroll_gateway

    def act(conn: Any) -> int:
        secret = enroll_gateway(conn, args.gateway_id, created_by="cli", patient_id=args.patient_id)
        _sync_report(conn, args)
        print(f"gateway {args.gateway_id} enrolled. MQTT username: {args.gateway_id}")
        print(f"secret (shown once; configure it on the gateway as its MQTT password): {secret}")
        if args.patient_id is not None:
            row = conn.execute("select tbib_has_consent(%s, 'remote_monitoring')", (args.patient_id,)).fetchone()
            if not (row and row[0]):  # no decision on file is no consent (docs/security.md, "Consent")
                print(
                    "warning: this patient has no remote_monitoring consent in force: their readings will be refused"
                    " until it is recorded (the patient's space, or POST /api/v1/patients/{id}/consents)",
                    file=sys.stderr,
                )
        return 0

    return _with_db(args, act)


def _revoke(args: argparse.Namespace) -> int:
    from teleconsult.security.enrolment import revoke_gateway

    def act(conn: Any) -> int:
        revoke_gateway(conn, args.gateway_id)
        _sync_report(conn, args)
        print(f"gateway {args.gateway_id} revoked")
        return 0

    return _with_db(args, act)


def _service(args: argparse.Namespace) -> int:
    from teleconsult.security.enrolment import add_service_account

    def act(conn: Any) -> int:
        secret = add_service_account(conn, args.username)
        _sync_report(conn, args)
        print(f"service account {args.username} secret (shown once): {secret}")
        return 0

    return _with_db(args, act)


def _list(args: argparse.Namespace) -> int:
    from teleconsult.security.enrolment import list_gateways

    def act(conn: Any) -> int:
        for g in list_gateways(conn):
            if args.json:
                print_json(
                    {
                        "gateway_id": g.gateway_id,
                        "created_at": g.created_at.isoformat(),
                        "revoked_at": g.revoked_at.isoformat() if g.revoked_at else None,
                    }
                )
            else:
                print(f"{g.gateway_id:<32} {'revoked' if g.revoked_at else 'active'}")
        return 0

    return _with_db(args, act)


def _sync(args: argparse.Namespace) -> int:
    def act(conn: Any) -> int:
        _sync_report(conn, args)
        return 0

    return _with_db(args, act)
