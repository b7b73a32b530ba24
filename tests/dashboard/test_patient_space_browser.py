"""The patient's own space (#/me) in a real headless Chromium, in French, English and Arabic (RTL): screenshots, the RTL
layout (charts neither clipped nor mirrored), keyboard-only consent decisions, an axe-core scan (0 serious or critical
violations) and joining a consultation from the space with camera + microphone against the doctor's call page.

Screenshots go to test-artifacts/patient-space/; `make screenshots` (-k screenshots) also refreshes docs/screenshots/.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from teleconsult.api.app import create_app
from teleconsult.store.migrate import upgrade
from tests.dashboard.helpers import insert_readings, raise_alert
from tests.teleconsult.api.helpers import PASSWORD, LiveServer, make_settings, password_hash

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "patient-space"
DOCS_SHOTS = REPO / "docs" / "screenshots"
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
PATIENT_NAME = "Fatima Zahra El Idrissi"


@dataclass
class Space:
    url: str
    dsn: str
    patient_id: uuid.UUID
    patient: str
    doctor: str
    consultation_id: str


def _user(
    conn: psycopg.Connection[Any], username: str, role: str, name: str, pid: uuid.UUID | None = None
) -> uuid.UUID:
    row = conn.execute(
        "insert into users (username, display_name, role, password_hash, patient_id) values (%s, %s, %s, %s, %s)"
        " returning id",
        (username, name, role, password_hash(), pid),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def _seed(dsn: str) -> tuple[uuid.UUID, str, str]:
    tag = uuid.uuid4().hex[:6]
    now = datetime.now(UTC)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "insert into patients (display_name, sex) values (%s, 'female') returning id", (PATIENT_NAME,)
        ).fetchone()
        assert row is not None
        pid = uuid.UUID(str(row[0]))
        doctor = f"ps-doc-{tag}"
        patient = f"ps-pat-{tag}"
        doc_id = _user(conn, doctor, "doctor", "Dr Amina Benali")
        _user(conn, patient, "patient", PATIENT_NAME, pid)
        conn.execute(
            "insert into care_team (clinician_id, patient_id, valid_from) values (%s, %s, now() - interval '30 days')",
            (doc_id, pid),
        )
        gw = f"gw-ps-{tag}"
        conn.execute("insert into gateways (id, patient_id, last_seen_at) values (%s, %s, now())", (gw, pid))
        devices = {}
        for addr, model, kind in (
            ("A4:C1:38:00:00:01", "Oxi-Home", "pulse_oximeter"),
            ("A4:C1:38:00:00:02", "Tensio 3", "blood_pressure"),
            ("A4:C1:38:00:00:03", "Balance B2", "weight_scale"),
        ):
            d = conn.execute(
                "insert into devices (gateway_id, patient_id, address, model, kind) values (%s, %s, %s, %s, %s)"
                " returning id",
                (gw, pid, addr, model, kind),
            ).fetchone()
            assert d is not None
            devices[kind] = d[0]
        conn.execute(
            "insert into latest_readings (patient_id, metric, value, unit, measured_at, reading_id, device_id)"
            " values (%s, 'battery_level', 15, '%%', now(), gen_random_uuid(), %s)",
            (pid, devices["weight_scale"]),
        )
        # a patient monitored before consent was required explicitly (migration 0110's legacy decision), and an
        # explicit teleconsultation consent; data sharing never decided
        conn.execute(
            "insert into consents (patient_id, purpose, granted, recorded_at, note, basis) values"
            " (%s, 'remote_monitoring', true, now() - interval '20 days', 'legacy (0110)', 'legacy'),"
            " (%s, 'teleconsultation', true, now() - interval '10 days', 'signed at enrolment', 'explicit')",
            (pid, pid),
        )
    day = timedelta(days=1)
    hours = 7 * 24 // 6
    insert_readings(dsn, pid, "spo2", "%", [96 - (i % 5 == 0) * 4 for i in range(hours)], every=day / 4, end=now)
    insert_readings(dsn, pid, "heart_rate", "/min", [72 + (i % 7) for i in range(hours)], every=day / 4, end=now)
    insert_readings(dsn, pid, "systolic_bp", "mm[Hg]", [128 + (i % 4) * 5 for i in range(14)], every=day / 2, end=now)
    insert_readings(dsn, pid, "diastolic_bp", "mm[Hg]", [82 + (i % 3) * 3 for i in range(14)], every=day / 2, end=now)
    insert_readings(dsn, pid, "body_weight", "kg", [71.2 + i * 0.1 for i in range(7)], every=day, end=now)
    raise_alert(dsn, pid, rule="spo2", severity="medium")
    raise_alert(dsn, pid, rule="no_data:glucose", severity="low")
    return pid, patient, doctor


@pytest.fixture(scope="module")
def space(services: Any, make_database: Any) -> Iterator[Space]:
    dsn = make_database("timescaledb" if services.timescaledb_version else "plain")
    upgrade(dsn)
    pid, patient, doctor = _seed(dsn)
    settings = make_settings(dsn, cookie_secure=False, ext={"alerts": {"enabled": False}})
    with LiveServer(create_app(settings)) as server:
        token = httpx.post(f"{server.url}/api/v1/auth/login", json={"username": doctor, "password": PASSWORD}).json()[
            "access_token"
        ]
        h = {"Authorization": f"Bearer {token}"}
        r = httpx.post(
            f"{server.url}/api/v1/patients/{pid}/consultations",
            json={"scheduled_for": (datetime.now(UTC) + timedelta(minutes=5)).isoformat(), "reason": "Suivi tension"},
            headers=h,
        )
        assert r.status_code == 201, r.text
        assert httpx.get(f"{server.url}/api/v1/patients/{pid}", headers=h).status_code == 200  # in the access log
        yield Space(server.url, dsn, pid, patient, doctor, r.json()["id"])


async def shot(page: Any, name: str, update_docs: bool, *, full_page: bool = True) -> None:
    await page.evaluate("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=full_page)
    if update_docs:
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SHOTS / f"{name}.png")


async def open_space(browser: Any, space: Space, lang: str, *, viewport: dict[str, int] | None = None) -> Any:
    """A new context, the login page switched to ``lang``, the patient logged in: the space with its charts drawn."""
    context = await browser.new_context(
        viewport=viewport or {"width": 412, "height": 915}, locale="fr-MA", bypass_csp=True, device_scale_factor=1
    )
    page = await context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    await page.goto(f"{space.url}/patient")  # the short address redirects to /#/me
    await page.wait_for_selector("#username")
    await page.select_option("#lang", lang)
    await page.wait_for_function(f"document.documentElement.lang === '{lang}'")
    await page.fill("#username", space.patient)
    await page.fill("#password", PASSWORD)
    await page.press("#password", "Enter")
    await page.wait_for_selector("#me-readings figure.me-chart canvas")
    await page.wait_for_selector("#me-access table tbody tr")
    await page.wait_for_function("document.querySelectorAll('#me-readings figure.me-chart canvas').length >= 4")
    return page


TITLES = {"fr": "Mes consentements", "en": "My consents", "ar": "موافقاتي"}
SPO2_ALERT = {
    "fr": "Votre oxygène dans le sang était trop bas.",
    "en": "Your blood oxygen was too low.",
    "ar": "الأكسجين في دمك كان منخفضاً جداً.",
}


@pytest.mark.parametrize("lang", ["fr", "en", "ar"])
async def test_screenshots_patient_space(space: Space, browser: Any, update_docs: bool, lang: str) -> None:
    page = await open_space(browser, space, lang)
    assert page.url.endswith("#/me")
    assert await page.get_attribute("html", "dir") == ("rtl" if lang == "ar" else "ltr")
    assert PATIENT_NAME in (await page.text_content("main h1") or "")
    assert await page.text_content("#me-consents h2") == TITLES[lang]
    # alerts in plain words, never the rule code
    alert_texts = await page.eval_on_selector_all(".me-alerts .me-alert-text", "els => els.map(e => e.textContent)")
    assert SPO2_ALERT[lang] in alert_texts
    assert not any("spo2" in s or "no_data" in s for s in alert_texts)
    # the legacy monitoring consent is shown as such and can be confirmed; data sharing is undecided (= no)
    states = await page.eval_on_selector_all(
        ".me-consent",
        "els => Object.fromEntries(els.map(e => [e.dataset.purpose, e.querySelector('.me-state').dataset.state]))",
    )
    assert states == {"remote_monitoring": "granted", "teleconsultation": "granted", "data_sharing": "none"}
    assert await page.is_visible("[data-purpose=remote_monitoring] [data-action=grant]")  # "confirm my agreement"
    # battery, consultation with the doctor's name, the doctor in the access log, the prescriptions slot
    assert await page.is_visible("#me-devices .me-low")
    assert "Dr Amina Benali" in (await page.text_content("#me-consults") or "")
    assert await page.is_visible(f"[data-consultation='{space.consultation_id}'] button.join")
    who = await page.eval_on_selector_all("#me-access tbody tr td:nth-child(2)", "els => els.map(e => e.textContent)")
    assert any("Dr Amina Benali" in w for w in who)  # the doctor's name, not the login
    assert await page.is_visible("[data-slot=prescriptions]")
    # nothing wider than a phone screen
    wide = await page.evaluate(
        """() => [...document.querySelectorAll('main *')].filter((e) => e.getBoundingClientRect().right >
             document.documentElement.clientWidth + 1 || e.getBoundingClientRect().left < -1)
             .map((e) => e.tagName + '.' + e.className).slice(0, 5)"""
    )
    assert wide == [], wide
    # no key left untranslated
    text = await page.inner_text("main")
    assert not re.findall(r"\bme\.[a-z_]+", text), re.findall(r"\bme\.[a-z_.]+", text)
    await shot(page, f"patient-space-{lang}", update_docs)
    assert page.errors == []
    await page.context.close()


@pytest.mark.parametrize(
    "viewport", [{"width": 412, "height": 915}, {"width": 1280, "height": 900}], ids=["phone", "desktop"]
)
async def test_rtl_layout_charts_are_neither_clipped_nor_mirrored(
    space: Space, browser: Any, viewport: dict[str, int]
) -> None:
    page = await open_space(browser, space, "ar", viewport=viewport)
    layout = await page.evaluate(
        """() => {
          const vw = document.documentElement.clientWidth;
          const charts = [...document.querySelectorAll('#me-readings figure.me-chart')].map((fig) => {
            const f = fig.getBoundingClientRect();
            const c = fig.querySelector('canvas');
            const r = c ? c.getBoundingClientRect() : null;
            return { id: fig.dataset.chart, dir: getComputedStyle(fig).direction,
                     canvas: r && { left: r.left, right: r.right, width: r.width },
                     fig: { left: f.left, right: f.right } };
          });
          const plots = window.tbib.view.plots.map((u) => {
            const xs = u.data[0];
            return { first: u.valToPos(xs[0], 'x'), last: u.valToPos(xs[xs.length - 1], 'x'), width: u.bbox.width };
          });
          const nav = [...document.querySelectorAll('.me-nav a')].map((a) => a.getBoundingClientRect());
          const h1 = document.querySelector('main h1');
          const at = (r) => r && { left: r.left, top: r.top };
          return { vw, scrollW: document.documentElement.scrollWidth, charts, plots,
                   navFirst: at(nav[0]), navSecond: at(nav[1]),
                   h1Dir: getComputedStyle(h1).direction, h1Right: h1.getBoundingClientRect().right,
                   mainRight: document.querySelector('main').getBoundingClientRect().right };
        }"""
    )
    assert layout["scrollW"] <= layout["vw"], "the page scrolls sideways (something is clipped or overflows)"
    drawn = [c for c in layout["charts"] if c["canvas"]]
    assert len(drawn) >= 4
    for c in drawn:
        assert c["dir"] == "ltr", f"chart {c['id']} inherits RTL: its axes and legend would be mirrored"
        assert c["canvas"]["left"] >= c["fig"]["left"] - 1, c
        assert c["canvas"]["right"] <= c["fig"]["right"] + 1, c
        assert c["canvas"]["left"] >= 0, f"chart {c['id']} is clipped on the left: {c}"
        assert c["canvas"]["right"] <= layout["vw"], f"chart {c['id']} is clipped on the right: {c}"
    for p in layout["plots"]:
        assert p["first"] < p["last"], "time must run left to right on the chart, in Arabic too"
    assert layout["h1Dir"] == "rtl"
    assert abs(layout["h1Right"] - layout["mainRight"]) < 40, "the title starts on the right in Arabic"
    if abs(layout["navFirst"]["top"] - layout["navSecond"]["top"]) < 2:
        assert layout["navFirst"]["left"] > layout["navSecond"]["left"], "the section links read right to left"
    assert page.errors == []
    await page.context.close()


async def test_keyboard_only_consent_grant_and_withdraw(space: Space, browser: Any) -> None:
    page = await open_space(browser, space, "fr")
    # the space takes the focus into the content; the skip link (first in the page) leads there too
    assert await page.evaluate("document.activeElement.id") == "main"
    await page.focus(".skip")
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.id") == "main"
    # to the "My consents" link of the section bar, Enter: the focus moves to the section's heading
    for _ in range(30):
        await page.keyboard.press("Tab")
        if (
            await page.evaluate("document.activeElement.dataset && document.activeElement.dataset.section")
            == "consents"
        ):
            break
    else:
        pytest.fail("the consents link cannot be reached with Tab")
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.id") == "me-consents-h"
    # Tab to "J'accepte" of data sharing, Enter: granted, and the focus stays on that consent
    for _ in range(30):
        await page.keyboard.press("Tab")
        focused = await page.evaluate(
            "[document.activeElement.dataset.action, document.activeElement.closest('[data-purpose]')?.dataset.purpose]"
        )
        if focused == ["grant", "data_sharing"]:
            break
    else:
        pytest.fail("the data sharing 'J'accepte' button cannot be reached with Tab")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("[data-purpose=data_sharing] .me-state[data-state=granted]")
    assert await page.evaluate("document.activeElement.closest('[data-purpose]')?.dataset.purpose") == "data_sharing"
    # withdrawing asks once more; Cancel has the focus (a stray Enter changes nothing); Shift+Tab, Enter withdraws
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.dataset.action") == "withdraw"
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.textContent") == "Annuler"
    await page.keyboard.press("Shift+Tab")
    assert await page.evaluate("document.activeElement.dataset.action") == "confirm-withdraw"
    await page.keyboard.press("Enter")
    await page.wait_for_selector("[data-purpose=data_sharing] .me-state[data-state=withdrawn]")
    with psycopg.connect(space.dsn) as conn:
        rows = conn.execute(
            "select granted, basis, recorded_by is not null from consents where patient_id = %s"
            " and purpose = 'data_sharing' order by id",
            (space.patient_id,),
        ).fetchall()
    assert rows == [(True, "explicit", True), (False, "explicit", True)]
    assert page.errors == []
    await page.context.close()


@pytest.mark.parametrize("lang", ["fr", "en", "ar"])
async def test_axe_core_finds_no_serious_violation(space: Space, browser: Any, lang: str) -> None:
    assert AXE.is_file(), "axe-core is missing: `make setup` (npm install) puts it in node_modules/"
    page = await open_space(browser, space, lang)
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate(
        """async () => {
          const r = await axe.run(document, { resultTypes: ['violations'] });
          return r.violations.map((v) => ({
            id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5) }));
        }"""
    )
    serious = [v for v in result if v["impact"] in ("serious", "critical")]
    assert serious == [], serious
    await page.context.close()


async def test_join_the_consultation_from_the_space_with_camera_and_microphone(space: Space, browser: Any) -> None:
    page = await open_space(browser, space, "ar")
    await page.click(f"[data-consultation='{space.consultation_id}'] button.join")
    await page.wait_for_function("window.tbib.call && window.tbib.call.state.status === 'waiting'")
    assert await page.evaluate("window.tbib.call.stream !== null && window.tbib.call.stream.getTracks().length") == 2
    # the doctor, on the call page with their own join token, admits the patient and calls
    async with httpx.AsyncClient(base_url=space.url) as http:
        login = await http.post("/api/v1/auth/login", json={"username": space.doctor, "password": PASSWORD})
        r = await http.post(
            f"/api/v1/patients/{space.patient_id}/consultations/{space.consultation_id}/join-token",
            json={"role": "doctor"},
            headers={"Authorization": f"Bearer {login.json()['access_token']}"},
        )
    assert r.status_code == 200, r.text
    doctor = await page.context.new_page()
    await doctor.goto(f"{space.url}/consult/doctor#token={r.json()['token']}&autoadmit=1")
    await page.wait_for_function("window.tbib.call.state.status === 'admitted'", timeout=20_000)
    await doctor.wait_for_function("window.tbib && window.tbib.state.peers.patient", timeout=20_000)
    await doctor.evaluate("window.tbib.startCall('patient')")
    await page.wait_for_function("window.tbib.call.state.status === 'connected'", timeout=30_000)
    await doctor.wait_for_function("window.tbib.state.calls[0].firstFrameMs", timeout=30_000)
    status = await page.text_content(".me-call-status")
    assert status == "أنت في مكالمة مع طبيبك."
    await page.click("#me-leave")
    await page.wait_for_selector(f"[data-consultation='{space.consultation_id}'] button.join")
    assert page.errors == []
    await page.context.close()


async def test_clinician_page_says_what_is_not_done_without_consent(space: Space, browser: Any) -> None:
    """The doctor's patient page of a patient with no decision on file: no monitoring, no teleconsultation."""
    with psycopg.connect(space.dsn, autocommit=True) as conn:
        row = conn.execute("insert into patients (display_name) values ('Sans Consentement') returning id").fetchone()
        assert row is not None
        conn.execute(
            "insert into care_team (clinician_id, patient_id, valid_from)"
            " select id, %s, now() - interval '1 day' from users where username = %s",
            (row[0], space.doctor),
        )
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = await context.new_page()
    await page.goto(f"{space.url}/")
    await page.fill("#username", space.doctor)
    await page.fill("#password", PASSWORD)
    await page.press("#password", "Enter")
    await page.wait_for_selector("table.patients tbody tr")
    await page.goto(f"{space.url}/#/patient/{row[0]}")
    await page.wait_for_selector(".consent-missing")
    notes = await page.eval_on_selector_all(".consent-missing", "els => els.map(e => e.textContent)")
    assert len(notes) == 2
    assert "suivi à distance" in notes[0]
    assert await page.is_disabled("#start-consult")
    await context.close()
