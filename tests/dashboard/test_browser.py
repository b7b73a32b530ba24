"""Real browser (headless Debian Chromium) against the whole pipeline: simulated gateways -> Mosquitto -> ingest ->
PostgreSQL/TimescaleDB -> alert engine -> dashboard. Screenshots go to test-artifacts/dashboard/ and docs/screenshots/.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from teleconsult.store.migrate import upgrade
from tests.dashboard.helpers import raise_alert
from tests.dashboard.stack import PASSWORD, Stack

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "dashboard"
DOCS_SHOTS = REPO / "docs" / "screenshots"


@pytest.fixture(scope="module")
def stack(
    services: Any, make_database: Any, own_broker: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    # TimescaleDB when the machine has it (the production flavour), else plain PostgreSQL: the journey runs either way.
    dsn = make_database("timescaledb" if services.timescaledb_version else "plain")
    upgrade(dsn)
    s = Stack(dsn, own_broker, tmp_path_factory.mktemp("stack"))
    try:
        yield s.start(("stable", "hypoxia", "sepsis", "hypertensive_crisis", "afib", "device_misuse"))
    finally:
        s.stop()


@pytest.fixture(scope="module")
def stranger(stack: Stack) -> str:
    """A patient of another doctor, with data, that must never show up."""
    with psycopg.connect(stack.dsn, autocommit=True) as conn:
        row = conn.execute("insert into patients (display_name) values ('Patient Étranger') returning id").fetchone()
    assert row is not None
    return str(row[0])


async def wait_for(page: Any, expression: str, timeout_ms: int = 30_000) -> Any:
    """Poll a JS expression (string predicates need the context's bypass_csp: the app forbids eval, as it should)."""
    handle = await page.wait_for_function(expression, timeout=timeout_ms)
    return await handle.json_value()


async def shot(page: Any, name: str, update_docs: bool, *, full_page: bool = False) -> None:
    """Screenshot into test-artifacts/ (and docs/screenshots/ with ``update_docs``), focus ring and scroll reset."""
    await page.evaluate("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=full_page)
    if update_docs:
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SHOTS / f"{name}.png")


async def login(page: Any, stack: Stack) -> None:
    assert stack.cast is not None
    await page.goto(f"{stack.url}/")
    await page.fill("#username", stack.cast.doctor)
    await page.fill("#password", PASSWORD)
    await page.press("#password", "Enter")
    await page.wait_for_selector("table.patients tbody tr")


async def test_screenshots_doctor_journey(stack: Stack, stranger: str, browser: Any, update_docs: bool) -> None:
    """login -> my patients only -> live alert -> acknowledge -> chart of the last hour -> consultation."""
    assert stack.cast is not None
    context = await browser.new_context(viewport={"width": 1360, "height": 900}, locale="fr-FR", bypass_csp=True)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await login(page, stack)
    names = await page.eval_on_selector_all(
        "table.patients tbody tr td:first-child a", "els => els.map(e => e.textContent)"
    )
    assert sorted(names) == sorted(p.name for p in stack.cast.patients)
    assert "Patient Étranger" not in names
    await wait_for(page, "document.getElementById('conn').dataset.state === 'live'")

    # The hypoxia patient deteriorates: an alert arrives without reload (sound, badge, inbox). An SpO2 alert (threshold
    # or trend, both with hysteresis) rather than the first NEWS2 one, which may clear again before we acknowledge it.
    hypoxic = next(p for p in stack.cast.patients if p.scenario == "hypoxia")
    alert_id = await wait_for(
        page,
        f"(() => {{ for (const a of window.tbib.state.alerts.values())"
        f" if (a.patient_id === '{hypoxic.patient_id}' && a.state === 'open' && a.rule.startsWith('spo2'))"
        " return a.id; return null; })()",
        timeout_ms=90_000,
    )
    assert await page.text_content("#alert-count")
    await page.wait_for_timeout(1500)  # a few live updates of the list
    await shot(page, "patient-list", update_docs)

    await page.click("#nav a[href='#/alerts']")
    item = page.locator(f"li[data-alert-id='{alert_id}']")
    await item.get_by_role("button", name="Acquitter").click()
    await page.fill("#alert-note", "Appel du patient, oxygène repris.")
    await page.click("#alert-ok")
    await wait_for(
        page,
        f"!document.getElementById('alert-dialog').open"
        f" && window.tbib.state.alerts.get({alert_id}).state === 'acknowledged'",
    )
    with psycopg.connect(stack.dsn) as conn:
        row = conn.execute("select state, notes from alerts where id = %s", (alert_id,)).fetchone()
    assert row == ("acknowledged", "Appel du patient, oxygène repris.")

    # Patient page: the SpO2 chart has the last hour's points (and keeps receiving live ones).
    await page.goto(f"{stack.url}/#/patient/{hypoxic.patient_id}")
    await page.wait_for_selector("figure.chart[data-chart='spo2'] canvas")
    points = int(await page.get_attribute("figure.chart[data-chart='spo2']", "data-points") or 0)
    assert points > 5
    await wait_for(page, f"+document.querySelector(\"figure.chart[data-chart='spo2']\").dataset.points > {points}")
    await shot(page, "patient-page", update_docs)

    # Consultation with the simulated patient's agent: admit, video, vitals overlay, notes, end.
    await page.click("#start-consult")
    cid = await wait_for(page, "document.querySelector('main').dataset.consultationId || null")
    token = await asyncio.to_thread(stack.token)
    r = await asyncio.to_thread(
        httpx.post,
        f"{stack.url}/api/v1/patients/{hypoxic.patient_id}/consultations/{cid}/join-token",
        json={"role": "agent"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text
    agent = stack.spawn(
        "agent",
        [sys.executable, "-m", "teleconsult.cli.main", "consult", "join", "--token", r.json()["token"],
         "--server", stack.url, "--no-camera", "--no-ice-servers", "--demo-vitals", "0.5"],
    )  # fmt: skip
    await page.get_by_role("button", name="Admettre Passerelle du patient").click()
    first_frame = await wait_for(page, "window.tbib.view.metrics.firstFrameMs", timeout_ms=30_000)
    assert 0 < first_frame < 30_000
    await wait_for(page, "document.getElementById('remote-video').currentTime > 0.5")
    n = await wait_for(page, "window.tbib.view.metrics.vitalsMessages >= 2 && window.tbib.view.metrics.vitalsMessages")
    await wait_for(page, f"window.tbib.view.metrics.vitalsMessages > {n}")
    # The vitals panel beside the video: the call's readings (data channel), drawn with their age and a sparkline.
    panel = page.locator("#vitals-panel")
    await wait_for(page, "document.querySelector('[data-tile=spo2]').dataset.source === 'call'")
    await wait_for(page, "document.querySelector('[data-tile=bp]').dataset.source === 'call'")
    assert "mmHg" in (await panel.locator("[data-tile=bp] .vp-value").text_content() or "")
    assert "/" in (await panel.locator("[data-tile=bp] .vp-value").text_content() or "")
    spark = await panel.locator("[data-tile=hr] polyline").first.get_attribute("points")
    assert spark is not None
    assert len(spark.split()) >= 2
    box_video, box_panel = await page.locator(".stage").bounding_box(), await panel.bounding_box()
    assert box_video is not None
    assert box_panel is not None
    assert box_panel["x"] >= box_video["x"] + box_video["width"] - 1  # beside the video, not over it
    assert await page.locator(".vp-toggle").is_hidden()  # the overlay toggle is for narrow screens only
    # reading taken in the agent -> drawn in the panel, for readings not held by the agent until the channel opened
    lat = await page.evaluate(
        "window.tbib.view.panel.metrics.callDraws.filter(([at, , sent]) => sent - at <= 20).map(([at, d]) => d - at)"
    )
    assert lat, lat
    assert max(lat) < 1500, lat  # the bench measures it (vitals_panel_p95_ms); here only: drawn, and soon
    await page.fill("#consult-notes", "Désaturation à domicile ; reprise de l'oxygène, contrôle demain.")
    await shot(page, "consultation", update_docs)
    await page.click("#end-call")
    await wait_for(page, "document.querySelector('main').dataset.state === 'ended'")
    with psycopg.connect(stack.dsn) as conn:
        notes = conn.execute("select text from consultation_notes where consultation_id = %s", (cid,)).fetchone()
    assert notes == ("Désaturation à domicile ; reprise de l'oxygène, contrôle demain.",)
    for _ in range(100):  # the room's "ended" record is stored asynchronously after the doctor's bye
        with psycopg.connect(stack.dsn) as conn:
            ended = conn.execute("select ended_at from consultations where id = %s", (cid,)).fetchone()
        if ended is not None and ended[0] is not None:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the consultation was not marked ended")
    assert await asyncio.to_thread(agent.wait, 20) == 0
    assert errors == []
    await context.close()


async def test_every_range_updates_live_without_reload(stack: Stack, browser: Any) -> None:
    """24 h, 7 d and 30 d charts come from the rollups and still gain the readings arriving on the vitals socket: the
    same figure (no re-render), no new history request, its last point moves forward."""
    assert stack.cast is not None
    context = await browser.new_context(viewport={"width": 1360, "height": 900}, locale="fr-FR", bypass_csp=True)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    history_requests: list[str] = []
    page.on("request", lambda r: history_requests.append(r.url) if "/history?" in r.url else None)
    await login(page, stack)
    patient = next(p for p in stack.cast.patients if p.scenario == "stable")
    await page.goto(f"{stack.url}/#/patient/{patient.patient_id}")
    await wait_for(page, "document.getElementById('conn').dataset.state === 'live'")
    chart = "figure.chart[data-chart='spo2']"
    for rng in ("24h", "7d", "30d"):
        await page.click(f".ranges button[data-range='{rng}']")
        await wait_for(page, f"document.querySelector('.charts').dataset.range === '{rng}'")
        await page.wait_for_selector(f"{chart} canvas")
        source = await page.get_attribute(chart, "data-source")
        assert source == "1m" if rng == "24h" else source in ("1m", "1h"), (rng, source)
        last = float(await page.get_attribute(chart, "data-last-t") or 0)
        assert last > 0
        await page.evaluate(f'window.__chart = document.querySelector("{chart}")')
        requests = len(history_requests)
        await wait_for(page, f'+document.querySelector("{chart}").dataset.lastT > {last}')
        assert await page.evaluate(f'window.__chart === document.querySelector("{chart}")'), rng
        assert len(history_requests) == requests, rng  # merged client side, not reloaded
        assert int(await page.get_attribute(chart, "data-live") or 0) >= 1
    # The page's own module: a silence breaks the line (a null between the two runs of data), live merging included.
    gaps = await page.evaluate(
        """async () => {
            const m = await import("/app/js/patient.js");
            const s = { metric: "spo2", t: [0, 60, 120, 180, 240], v: [97, 96, 97, 95, 96], bucket_s: 60, tail: null };
            for (const [ts, v] of [[7200, 94], [7230, 91], [7250, 95]]) m.mergeLive(s, ts, v, 86400, ts);
            const [xs, ys] = m.align([s]);
            return { xs, ys };
        }"""
    )
    xs, ys = gaps["xs"], gaps["ys"]
    assert ys.count(None) == 1  # one break, in the two-hour silence
    assert 240 < xs[ys.index(None)] < 7230
    # the live minute 7 200-7 260 s is drawn as its minimum and its maximum (= latest); 94 was neither
    assert (xs[-2:], ys[-2:]) == ([7230, 7250], [91, 95])
    assert errors == []
    await context.close()


async def test_patient_page_survives_vitals_before_its_detail_and_leaving_early(stack: Stack, browser: Any) -> None:
    """The CI failure of stop 21: a vitals frame arrived while the patient's detail was still loading and the page drew
    into elements it had not built yet ("Cannot read properties of undefined (reading 'replaceChildren')"). Here the
    detail is held back on purpose while live readings flow; then a page left before its detail came must not draw
    over the page that replaced it."""
    assert stack.cast is not None
    context = await browser.new_context(viewport={"width": 1360, "height": 900}, locale="fr-FR", bypass_csp=True)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await login(page, stack)
    await wait_for(page, "document.getElementById('conn').dataset.state === 'live'")
    patient = next(p for p in stack.cast.patients if p.scenario == "stable")
    held: list[Any] = []
    release = asyncio.Event()

    async def hold(route: Any) -> None:
        held.append(route)
        await release.wait()
        await route.continue_()

    await page.route(f"**/api/v1/patients/{patient.patient_id}", hold)
    await page.evaluate(
        "pid => { window.__mine = 0; window.tbib.state.addEventListener('vitals', (ev) => {"
        " for (const it of ev.detail.items) if (it[0] === pid) window.__mine += 1; }); }",
        str(patient.patient_id),
    )
    await page.goto(f"{stack.url}/#/patient/{patient.patient_id}")
    await wait_for(page, "window.__mine > 1")  # this patient's live readings reached the page while it waited
    assert len(held) == 1
    release.set()
    await page.wait_for_selector("figure.chart[data-chart='spo2'] canvas")
    assert await page.text_content(".patient-head h1") == patient.name

    # Leave before the detail comes: the list page that replaced it stays as it is.
    release.clear()
    await page.evaluate("location.hash = '#/'")
    await page.wait_for_selector("table.patients tbody tr")
    await page.evaluate("window.__mine = 0")
    await page.evaluate(f"location.hash = '#/patient/{patient.patient_id}'")
    await wait_for(page, "window.__mine > 1")
    assert len(held) == 2
    await page.evaluate("location.hash = '#/'")
    await page.wait_for_selector("table.patients tbody tr")
    release.set()
    await page.wait_for_timeout(1500)
    assert await page.locator(".patient-head").count() == 0
    assert await page.locator("table.patients tbody tr").count() == len(stack.cast.patients)
    assert errors == []
    await context.close()


async def test_network_cut_reconnects_and_shows_the_missed_alert(stack: Stack, browser: Any) -> None:
    assert stack.cast is not None
    context = await browser.new_context(locale="fr-FR", bypass_csp=True)
    page = await context.new_page()
    await login(page, stack)
    await wait_for(page, "document.getElementById('conn').dataset.state === 'live'")
    await context.set_offline(True)
    stack.app.state.live_hub.disconnect_all_threadsafe()  # the server drops the socket: the cut is real both ways
    await wait_for(page, "['offline', 'reconnecting'].includes(document.getElementById('conn').dataset.state)")
    stable = next(p for p in stack.cast.patients if p.scenario == "stable")
    missed = await asyncio.to_thread(raise_alert, stack.dsn, stable.patient_id, "no_data:body_weight", "low")
    await page.wait_for_timeout(500)
    assert await page.evaluate(f"window.tbib.state.alerts.has({missed})") is False
    await context.set_offline(False)
    await wait_for(page, "document.getElementById('conn').dataset.state === 'live'")
    await wait_for(page, f"window.tbib.state.alerts.has({missed})")
    assert await page.evaluate("window.tbib.feed.stats.connects") >= 2
    await page.click("#nav a[href='#/alerts']")
    await page.wait_for_selector(f"li[data-alert-id='{missed}']")
    await context.close()


async def test_english_switch_and_keyboard_navigation(stack: Stack, browser: Any) -> None:
    context = await browser.new_context(locale="en-GB", bypass_csp=True)
    page = await context.new_page()
    await login(page, stack)
    assert await page.text_content("main h1") == "Mes patients"  # French by default
    await page.select_option("#lang", "en")
    await page.wait_for_function("document.querySelector('main h1').textContent === 'My patients'")
    assert await page.get_attribute("html", "lang") == "en"
    assert await page.text_content("#conn") == "Live"
    await page.focus("table.patients tbody tr:first-child a")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("figure.chart")
    assert await page.text_content("#start-consult") == "Start a teleconsultation"
    await page.select_option("#lang", "fr")  # the choice is remembered per browser; leave French for the other tests
    await context.close()


async def test_vitals_panel_server_fallback_alert_ack_stale_and_narrow_screen(
    stack: Stack, browser: Any, update_docs: bool
) -> None:
    """Without an agent in the call the panel shows the server's live vitals (the websocket fallback); an alert raised
    during the call is listed and acknowledged from the panel (stored); an old value gets the stale badge; on a narrow
    screen the panel lies over the video, behind a toggle."""
    assert stack.cast is not None
    context = await browser.new_context(viewport={"width": 1360, "height": 900}, locale="fr-FR", bypass_csp=True)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await login(page, stack)
    patient = next(p for p in stack.cast.patients if p.scenario == "stable")
    await page.goto(f"{stack.url}/#/consult/{patient.patient_id}")
    await page.wait_for_selector("#vitals-panel")
    await wait_for(page, "document.querySelector('main').dataset.consultationId || null")
    # the snapshot's latest values at once, then live ones from the vitals websocket (no agent, no data channel)
    await wait_for(page, "document.querySelector('[data-tile=spo2]').dataset.source === 'server'")
    served = await wait_for(page, "window.tbib.view.panel.metrics.server")
    await wait_for(page, f"window.tbib.view.panel.metrics.server > {served}")
    assert await page.evaluate("window.tbib.view.panel.metrics.call") == 0
    assert await page.locator(".vp-news2").is_visible()

    alert_id = await asyncio.to_thread(raise_alert, stack.dsn, patient.patient_id, "weight_gain", "medium")
    item = page.locator(f".vp-alerts li[data-alert-id='{alert_id}']")
    await item.wait_for()
    await item.get_by_role("button", name="Acquitter").click()
    await wait_for(page, f"window.tbib.state.alerts.get({alert_id}).state === 'acknowledged'")
    await page.locator(f".vp-alerts li[data-alert-id='{alert_id}'].state-acknowledged").wait_for()
    with psycopg.connect(stack.dsn) as conn:
        row = conn.execute("select state, notes from alerts where id = %s", (alert_id,)).fetchone()
    assert row == ("acknowledged", "Acquittée pendant la téléconsultation.")

    # A value older than its cadence (respiratory rate: 60 s; the simulated devices measure none) is marked stale;
    # a fresh reading clears the badge.
    push_rr = (
        "ageS => window.tbib.view.panel.push({type: 'reading', metric: 'respiratory_rate', value: 14, unit: '/min',"
        " measured_at: new Date(Date.now() - ageS * 1000).toISOString()}, 'call')"
    )
    await page.evaluate(push_rr, 120)
    await wait_for(page, "!document.querySelector('[data-tile=rr] .vp-stale').hidden")
    assert await page.locator("[data-tile=rr] .vp-stale").is_visible()
    assert await page.get_attribute("[data-tile=rr]", "data-state") == "stale"
    await page.evaluate(push_rr, 0)
    await wait_for(page, "document.querySelector('[data-tile=rr] .vp-stale').hidden")
    assert await page.get_attribute("[data-tile=rr]", "data-state") == "fresh"

    # Narrow screen: the panel is hidden over the video until the toggle opens it.
    await page.set_viewport_size({"width": 600, "height": 900})
    toggle = page.locator(".vp-toggle")
    assert await toggle.is_visible()
    assert await page.locator("#vitals-panel").is_hidden()
    await toggle.click()
    assert await toggle.get_attribute("aria-expanded") == "true"
    assert await page.locator("#vitals-panel").is_visible()
    box_video, box_panel = (
        await page.locator(".stage").bounding_box(),
        await page.locator("#vitals-panel").bounding_box(),
    )
    assert box_video is not None
    assert box_panel is not None
    assert box_video["x"] <= box_panel["x"] < box_video["x"] + box_video["width"]  # over the video
    await shot(page, "consultation-narrow", update_docs)
    await page.click("#end-call")
    assert errors == []
    await context.close()
