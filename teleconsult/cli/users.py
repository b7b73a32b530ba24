"""`tbib users`: manage user accounts (add the first admin, list, disable/enable)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

from teleconsult.cli._db import add_db_arguments, database_url
from teleconsult.cli.common import CliError, print_json

ROLES = ("admin", "doctor", "nurse", "patient", "pharmacist")


def add_parser(sub: Any) -> None:
    """Register `tbib users`."""
    p: argparse.ArgumentParser = sub.add_parser("users", help="manage user accounts", description=__doc__)
    cmds = p.add_subparsers(dest="users_command", metavar="ACTION", required=True)

    add = cmds.add_parser("add", help="create an account (the password is prompted, or read from stdin)")
    add.add_argument("username")
    add.add_argument("--role", choices=ROLES, required=True)
    add.add_argument("--display-name", default="")
    add.add_argument("--patient-id", type=uuid.UUID, help="patient record of a patient account")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    add_db_arguments(add)
    add.set_defaults(func=_run(_add))

    ls = cmds.add_parser("list", help="list accounts")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    add_db_arguments(ls)
    ls.set_defaults(func=_run(_list))

    for name, help_text in (("disable", "disable an account and end its sessions"), ("enable", "re-enable an account")):
        d = cmds.add_parser(name, help=help_text)
        d.add_argument("username")
        add_db_arguments(d)
        d.set_defaults(func=_run(_disable if name == "disable" else _enable))


def _run(action: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        from teleconsult.errors import TeleconsultError

        try:
            code: int = asyncio.run(action(args, database_url(args)))
        except TeleconsultError as exc:
            raise CliError(str(exc)) from exc
        except OSError as exc:
            raise CliError(f"cannot reach the database: {exc}") from exc
        return code

    return run


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise CliError("passwords differ")
    return first


async def _connect(dsn: str) -> Any:
    import psycopg

    try:
        return await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        raise CliError(f"cannot connect to the database: {exc}".splitlines()[0]) from exc


async def _add(args: argparse.Namespace, dsn: str) -> int:
    from teleconsult.security import accounts
    from teleconsult.security.models import Role

    password = _read_password(args)
    async with await _connect(dsn) as conn:
        user = await accounts.create_user(
            conn,
            username=args.username,
            password=password,
            role=Role(args.role),
            display_name=args.display_name,
            patient_id=args.patient_id,
        )
    print(f"created {user.role.value} {user.username} ({user.id})")
    return 0


async def _list(args: argparse.Namespace, dsn: str) -> int:
    from teleconsult.security import accounts

    async with await _connect(dsn) as conn:
        users = await accounts.list_users(conn)
    for u in users:
        if args.json:
            print_json(
                {
                    "id": str(u.id),
                    "username": u.username,
                    "role": u.role.value,
                    "display_name": u.display_name,
                    "patient_id": str(u.patient_id) if u.patient_id else None,
                    "disabled": u.disabled,
                    "totp_enabled": u.totp_enabled,
                }
            )
        else:
            state = "disabled" if u.disabled else "active"
            print(f"{u.username:<24} {u.role.value:<10} {state:<8} {u.display_name}")
    return 0


async def _set(args: argparse.Namespace, dsn: str, disabled: bool) -> int:
    from teleconsult.security import accounts

    async with await _connect(dsn) as conn:
        user = await accounts.find_user(conn, args.username)
        await accounts.set_disabled(conn, user.id, disabled, datetime.now(UTC))
    print(f"{'disabled' if disabled else 'enabled'} {user.username}")
    return 0


async def _disable(args: argparse.Namespace, dsn: str) -> int:
    return await _set(args, dsn, True)


async def _enable(args: argparse.Namespace, dsn: str) -> int:
    return await _set(args, dsn, False)
