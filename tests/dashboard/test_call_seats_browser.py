"""A 3-seat teleconsultation from the dashboard (issue 19 item 3), on real engines: PostgreSQL, uvicorn (the whole
app), headless Debian Chromium for the doctor and for a guest (a second browser context), and the aiortc patient agent
(``tbib consult join``, a real process).

The doctor invites a nurse from the consultation page (invite form, one-time link, copy button), the nurse opens the
link in her own browser and knocks, the doctor admits her from the waiting room (name + role), the patient's agent
joins and is admitted too. The doctor then has one tile per remote seat, labelled with name and role, and decoded video
frames in both (not only elements in the DOM); the nurse gets the doctor's video. The agent keeps one peer connection
(it answers the doctor only: teleconsult/signaling/rooms.py, guest.js), so the patient's seat is the doctor <-> agent
pair. When the nurse leaves, her tile goes. Screenshot docs/screenshots/call-3-seats.png (with ``-k screenshots``).
"""
# ruff: noqa: RUF001  (the French pages use the typographic apostrophe U+2019)

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from tests.dashboard.helpers import PASSWORD, Cast
from tests.dashboard.test_browser import shot, wait_for
from tests.processes import Spawner
from tests.teleconsult.api.helpers import LiveServer, login

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NURSE = "Khadija Amrani"


def give_consent(cast: Cast, pid: uuid.UUID) -> None:
    with psycopg.connect(cast.dsn, autocommit=True) as conn:
        conn.execute("insert into consents (patient_id, purpose, granted) values (%s, 'teleconsultation', true)",
                     (pid,))  # fmt: skip


async def open_consultation(page: Any, url: str, cast: Cast, pid: uuid.UUID) -> str:
    """Log the doctor in and open a consultation for ``pid``; its id once the doctor is in the room."""
    await page.goto(f"{url}/")
    await page.fill("#username", cast.doctor)
    await page.fill("#password", PASSWORD)
    await page.press("#password", "Enter")
    await page.wait_for_selector("table.patients tbody tr")
    await page.goto(f"{url}/#/consult/{pid}")
    cid: str = await wait_for(page, "document.querySelector('main').dataset.state === 'waiting'"
                              " && document.querySelector('main').dataset.consultationId")  # fmt: skip
    return cid


async def frames_of(page: Any, seat: str) -> dict[str, Any]:
    """The doctor's view of ``seat``: its tile's caption and video size, and the frames its peer connection decoded."""
    result: dict[str, Any] = await page.evaluate(
        """async (seat) => {
          const fig = document.querySelector(`.tiles figure[data-seat="${seat}"]`);
          const s = window.tbib.view.sessions[seat];
          let decoded = 0;
          if (s) for (const r of (await s.pc.getStats()).values())
            if (r.type === "inbound-rtp" && r.kind === "video") decoded += r.framesDecoded || 0;
          const v = fig && fig.querySelector("video");
          return { caption: fig ? fig.querySelector("figcaption").textContent : null,
                   width: v ? v.videoWidth : 0, time: v ? v.currentTime : 0, decoded };
        }""",
        seat,
    )
    return result


async def until_frames(page: Any, seat: str, *, more_than: int = 0) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for _ in range(300):
        seen = await frames_of(page, seat)
        if seen["width"] > 0 and seen["decoded"] > more_than:
            return seen
        await asyncio.sleep(0.1)
    pytest.fail(f"no video frames from the {seat} seat: {seen}")


async def test_screenshots_three_seat_call(
    cast: Cast, api_server: LiveServer, browser: Any, spawn: Spawner, update_docs: bool
) -> None:
    pid = cast.mine[0]
    give_consent(cast, pid)
    url = api_server.url
    doctor_ctx = await browser.new_context(viewport={"width": 1360, "height": 900}, locale="fr-FR", bypass_csp=True)
    guest_ctx = await browser.new_context(viewport={"width": 800, "height": 700}, locale="fr-FR", bypass_csp=True)
    try:
        await doctor_ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
        page = await doctor_ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        cid = await open_consultation(page, url, cast, pid)

        # The invite form: role + name -> the one-time link, copied to the clipboard.
        await page.select_option("#invite-role", "nurse")
        await page.fill("#invite-name", NURSE)
        await page.click("#invite-create")
        link = await wait_for(page, "document.getElementById('invite-link').value || null")
        assert link.startswith(f"{url}/consult/guest#invite=")
        assert NURSE in (await page.text_content(".invite-out p") or "")
        await page.click("#invite-copy")
        await wait_for(page, "document.querySelector('.invite [role=status]').textContent === 'Lien copié.'")
        assert await page.evaluate("navigator.clipboard.readText()") == link

        # The nurse opens the link in her own browser and knocks; the doctor sees her name and role, and admits her.
        guest = await guest_ctx.new_page()
        guest_errors: list[str] = []
        guest.on("pageerror", lambda exc: guest_errors.append(str(exc)))
        await guest.goto(link)
        await wait_for(guest, "window.tbib && window.tbib.state.status.startsWith('en attente')")
        who = f"{NURSE} (Infirmier·e)"
        await page.wait_for_selector(f"ul.lobby li[data-seat=nurse] >> text={who}")
        await page.get_by_role("button", name=f"Admettre {who}").click()
        await wait_for(guest, "window.tbib.state.status === 'dans la consultation'")
        nurse = await until_frames(page, "nurse")
        assert nurse["caption"] == who
        await page.wait_for_selector(f"#invite-list li[data-status=used] >> text={who} — utilisé")

        # The patient's gateway agent (aiortc, a real process) joins; the doctor admits it from the waiting room.
        token = await asyncio.to_thread(login, url, cast.doctor)
        r = await asyncio.to_thread(
            httpx.post, f"{url}/api/v1/patients/{pid}/consultations/{cid}/join-token", json={"role": "agent"},
            headers={"Authorization": f"Bearer {token}"},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        agent = spawn(
            [sys.executable, "-m", "teleconsult.cli.main", "consult", "join", "--token", r.json()["token"],
             "--server", url, "--no-camera", "--no-ice-servers", "--demo-vitals", "0.5"],
        )  # fmt: skip
        await page.get_by_role("button", name="Admettre Passerelle du patient").click()
        patient = await until_frames(page, "patient")
        assert patient["caption"] == f"{cast.names[pid]} (Passerelle du patient)"

        # Two remote tiles, each with frames still arriving; the nurse receives the doctor's video.
        assert await page.locator(".tiles figure").count() == 2
        assert await page.evaluate("document.querySelector('.tiles').dataset.count") == "2"
        for seat, before in (("nurse", nurse), ("patient", patient)):
            later = await until_frames(page, seat, more_than=before["decoded"])
            assert later["decoded"] > before["decoded"], seat
        await wait_for(
            guest, "(() => { const v = document.getElementById('remote-doctor'); return !!v && v.videoWidth > 0"
            " && v.currentTime > 0.3; })()"
        )  # fmt: skip
        await wait_for(page, "window.tbib.view.metrics.vitalsMessages >= 1")  # the vitals channel: patient seat only
        assert await page.evaluate("Object.keys(window.tbib.view.metrics.firstFrameBySeat).sort()") == [
            "nurse",
            "patient",
        ]
        await page.wait_for_timeout(800)  # a few more frames in both tiles for the picture
        await shot(page, "call-3-seats", update_docs)

        # The nurse leaves: her tile goes, the patient's stays.
        await guest.click("#leave")
        await page.wait_for_selector(".tiles figure[data-seat=nurse]", state="detached", timeout=10_000)
        assert await page.locator(".tiles figure").count() == 1
        assert await page.text_content("main .status") == f"{who} a quitté l’appel."
        await page.click("#end-call")
        await wait_for(page, "document.querySelector('main').dataset.state === 'ended'")
        assert await asyncio.to_thread(agent.wait, 20) == 0
        assert errors == []
        assert guest_errors == []
        errs = await page.evaluate("window.tbib.view.metrics.errors")
        assert [e for e in errs if not e.startswith("camera")] == [], errs
    finally:
        await guest_ctx.close()
        await doctor_ctx.close()


async def test_english_invite_and_refuse(cast: Cast, api_server: LiveServer, browser: Any) -> None:
    """The English consultation page: invite a family member, see them knock by name and role, refuse them: the guest
    is told, the waiting room is empty again, no tile was made for them, and the link shows as used; a second link
    withdrawn from the list no longer opens the room."""
    pid = cast.mine[1]
    give_consent(cast, pid)
    url = api_server.url
    doctor_ctx = await browser.new_context(viewport={"width": 1360, "height": 900}, locale="en-GB", bypass_csp=True)
    guest_ctx = await browser.new_context(locale="fr-FR", bypass_csp=True)
    try:
        await doctor_ctx.add_init_script("localStorage.setItem('tbib.lang', 'en')")
        page = await doctor_ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        cid = await open_consultation(page, url, cast, pid)
        assert await page.text_content("#invite-h") == "Invite a participant"
        assert await page.text_content("#invite-role option[value=family]") == "Family"
        await page.select_option("#invite-role", "family")
        await page.fill("#invite-name", "Omar")
        await page.get_by_role("button", name="Create link").click()
        link = await wait_for(page, "document.getElementById('invite-link').value || null")
        assert (await page.text_content(".invite-out p") or "").startswith("One-time link for Omar (Family)")

        guest = await guest_ctx.new_page()
        await guest.goto(link)
        await page.wait_for_selector("ul.lobby li[data-seat=family] >> text=Omar (Family)")
        await page.get_by_role("button", name="Refuse Omar (Family)").click()
        await wait_for(guest, 'window.tbib.state.status === "le médecin n\'a pas pu vous recevoir"')
        await wait_for(page, "document.querySelectorAll('ul.lobby li').length === 0")
        assert await page.is_visible("text=Nobody is waiting.")
        assert await page.locator(".tiles figure").count() == 0
        await page.wait_for_selector("#invite-list li[data-status=used] >> text=Omar (Family) — used")
        # A second link, withdrawn before use: it no longer works.
        await page.select_option("#invite-role", "interpreter")
        await page.fill("#invite-name", "Sara")
        await page.get_by_role("button", name="Create link").click()
        await wait_for(page, "document.getElementById('invite-link').value.includes('invite=') && "
                             "document.querySelectorAll('#invite-list li').length === 2")  # fmt: skip
        second = await page.input_value("#invite-link")
        await page.get_by_role("button", name="Withdraw Sara").click()
        await page.wait_for_selector("#invite-list li[data-status=revoked] >> text=Sara (Interpreter) — withdrawn")
        assert await page.locator("#invite-list button").count() == 0
        late = await guest_ctx.new_page()
        await late.goto(second)
        await wait_for(late, "window.tbib && window.tbib.state.status.startsWith('lien déjà utilisé')")
        token = await asyncio.to_thread(login, url, cast.doctor)
        r = await asyncio.to_thread(
            httpx.get, f"{url}/api/v1/patients/{pid}/consultations/{cid}/invites",
            headers={"Authorization": f"Bearer {token}"},
        )  # fmt: skip
        assert [(i["name"], i["role"], i["status"]) for i in r.json()] == [
            ("Omar", "family", "used"),
            ("Sara", "interpreter", "revoked"),
        ]
        assert errors == []
    finally:
        await guest_ctx.close()
        await doctor_ctx.close()
