"""The websocket adapter on real uvicorn: frames, errors that keep the connection, pages."""

from __future__ import annotations

import json
from typing import Any

import httpx
from websockets.asyncio.client import connect

from teleconsult.signaling.tokens import Role

from .conftest import Server


async def recv(ws: Any) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await ws.recv())
    return frame


def join(seq: int, token: str) -> str:
    return json.dumps({"v": 1, "seq": seq, "type": "join", "token": token})


async def test_join_admit_relay_over_real_websockets(signaling_server: Server) -> None:
    async with connect(signaling_server.ws) as doctor, connect(signaling_server.ws) as patient:
        assert (await recv(doctor))["type"] == "hello"
        assert (await recv(patient))["type"] == "hello"
        await doctor.send(
            json.dumps({"v": 1, "seq": 1, "type": "join", "token": signaling_server.token(Role.DOCTOR, "d")})
        )
        assert (await recv(doctor))["type"] == "joined"
        await patient.send(
            json.dumps({"v": 1, "seq": 1, "type": "join", "token": signaling_server.token(Role.PATIENT, "p")})
        )
        assert (await recv(patient))["type"] == "lobby"
        assert (await recv(doctor))["waiting"][0]["seat"] == "patient"
        await doctor.send(json.dumps({"v": 1, "seq": 2, "type": "admit", "seat": "patient"}))
        joined = await recv(patient)
        assert joined["type"] == "joined"
        assert joined["peers"][0]["seat"] == "doctor"
        # garbage: an error frame, and the connection survives
        await patient.send("{not json")
        err = await recv(patient)
        assert (err["type"], err["code"]) == ("error", "malformed")
        await patient.send(b"\x00" * 70_000)
        assert (await recv(patient))["code"] == "too-large"
        await doctor.send(json.dumps({"v": 1, "seq": 3, "type": "offer", "sdp": "v=0"}))
        types = []
        while "offer" not in types:
            types.append((await recv(patient))["type"])
        await patient.send(json.dumps({"v": 1, "seq": 2, "type": "ping"}))
        pong = await recv(patient)
        assert pong["type"] == "pong"
        assert pong["re"] == 2


async def test_pages_are_served_without_inline_script(signaling_server: Server) -> None:
    async with httpx.AsyncClient(base_url=signaling_server.base) as client:
        for page in ("patient", "doctor"):
            r = await client.get(f"/consult/{page}")
            assert r.status_code == 200
            assert "text/html" in r.headers["content-type"]
            assert "<script>" not in r.text
        js = await client.get("/consult/static/call.js")
        assert js.status_code == 200
        assert "javascript" in js.headers["content-type"]
        assert (await client.get("/consult/static/../router.py")).status_code == 404
        assert (await client.get("/consult/admin")).status_code == 404
