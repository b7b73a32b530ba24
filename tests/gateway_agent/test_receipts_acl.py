"""Receipts under the broker ACL (real Mosquitto with the password and ACL files tbib renders): a gateway reads only its
own receipts, only service accounts write receipts; the real publisher's receipt subscription is granted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from teleconsult.security.mosquitto import hash_password, render_acl_file, render_password_file
from tests.teleconsult.security.test_broker_acl import Client

NOT_AUTHORIZED = 135
USERS = {"tbib-ingest": "s3cret-ingest", "gw-a": "s3cret-a", "gw-b": "s3cret-b"}


def _client(port: int, user: str) -> Client:
    client = Client(port, user, USERS[user])
    assert client.rc == 0, f"{user} refused: {client.rc}"
    return client


def test_gateway_reads_only_its_own_receipts_and_only_services_write_them(tmp_path: Path, broker_factory: Any) -> None:
    (tmp_path / "passwd").write_text(render_password_file((u, hash_password(p)) for u, p in USERS.items()))
    (tmp_path / "acl").write_text(render_acl_file(["tbib-ingest"]))
    broker = broker_factory(
        f"allow_anonymous false\npassword_file {tmp_path / 'passwd'}\nacl_file {tmp_path / 'acl'}\n"
    )
    ingest, a, b = (_client(broker.port, u) for u in ("tbib-ingest", "gw-a", "gw-b"))
    try:
        assert a.subscribe("tbib/v1/gw/gw-a/receipts") == [1]
        b.subscribe("tbib/v1/gw/gw-b/receipts", "tbib/v1/gw/gw-a/receipts", "tbib/v1/gw/+/receipts", "#")
        assert ingest.publish("tbib/v1/gw/gw-a/receipts", b"receipt-for-a") == 0
        assert a.drain() == [("tbib/v1/gw/gw-a/receipts", b"receipt-for-a")]
        assert b.drain(0.2) == []  # not B's, whatever SUBACK said
        # a gateway cannot forge receipts for another gateway (nor could it read them)
        assert b.publish("tbib/v1/gw/gw-a/receipts", b"forged") == NOT_AUTHORIZED
        assert a.drain(0.2) == []
        assert ingest.publish("tbib/v1/gw/gw-b/receipts", b"receipt-for-b") == 0
        assert set(b.drain()) == {("tbib/v1/gw/gw-b/receipts", b"receipt-for-b")}  # once per matching filter
    finally:
        for c in (ingest, a, b):
            c.close()
