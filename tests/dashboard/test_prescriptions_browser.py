"""e-Prescription journey in a real browser (headless Debian Chromium), issue 18 item 8: the doctor records an allergy
on the patient page, prescribes in a teleconsultation (the server's checks shown in the form), issues and prints; the
pharmacist "scans" the printed ordonnance (its QR code decoded from a screenshot by zxing-cpp, the decoded text typed
into the scan field as a USB scanner does), sees the green signature check, dispenses part with a batch and a generic;
another pharmacy dispensing meanwhile gives the 409 message; the patient's space and the doctor's patient page show
"partiellement délivrée" with the dispense events. Screenshots in test-artifacts/dashboard/ (docs/screenshots/ with
`-k screenshots`).
"""
# ruff: noqa: RUF001  (the French pages use the typographic apostrophe U+2019; buttons are found by their text)

from __future__ import annotations

import asyncio
import io
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest

from teleconsult.api.app import create_app
from teleconsult.store.migrate import upgrade
from tests.dashboard.test_browser import ARTIFACTS, DOCS_SHOTS, REPO, wait_for
from tests.teleconsult.api.helpers import PASSWORD, LiveServer, login, make_settings, password_hash

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@dataclass
class RxCast:
    dsn: str
    url: str = ""
    patient_id: uuid.UUID = field(default_factory=uuid.uuid4)
    users: dict[str, uuid.UUID] = field(default_factory=dict)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    def username(self, role: str) -> str:
        return f"rx-{role}-{self.tag}"


def _seed(dsn: str) -> RxCast:
    """A doctor on the patient's care team (consents given), the patient's account, two pharmacists, an admin."""
    cast = RxCast(dsn)
    names = {
        "doctor": ("doctor", "Dr Amina Benali"),
        "patient": ("patient", "Fatima Zahra Alaoui"),
        "pharmacist": ("pharmacist", "Youssef Idrissi"),
        "pharmacist2": ("pharmacist", "Salma Tazi"),
        "admin": ("admin", "Admin"),
    }
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "insert into patients (display_name, birth_date) values ('Fatima Zahra Alaoui', '1961-04-02') returning id"
        ).fetchone()
        assert row is not None
        cast.patient_id = uuid.UUID(str(row[0]))
        for key, (role, display) in names.items():
            row = conn.execute(
                "insert into users (username, display_name, role, password_hash, patient_id)"
                " values (%s, %s, %s, %s, %s) returning id",
                (cast.username(key), display, role, password_hash(), cast.patient_id if role == "patient" else None),
            ).fetchone()
            assert row is not None
            cast.users[key] = uuid.UUID(str(row[0]))
        conn.execute(
            "insert into care_team (clinician_id, patient_id, valid_from) values (%s, %s, now() - interval '1 day')",
            (cast.users["doctor"], cast.patient_id),
        )
        for purpose in ("remote_monitoring", "teleconsultation"):
            conn.execute(
                "insert into consents (patient_id, purpose, granted, recorded_by, note)"
                " values (%s, %s, true, %s, 'test')",
                (cast.patient_id, purpose, cast.users["doctor"]),
            )
    return cast


def _admin_setup(cast: RxCast) -> None:
    """Through the admin API (docs/prescriptions.md, Administration): registration number, two pharmacies."""
    headers = {"Authorization": f"Bearer {login(cast.url, cast.username('admin'))}"}
    with httpx.Client(base_url=f"{cast.url}/api/v1", headers=headers) as c:
        r = c.put(f"/practitioners/{cast.users['doctor']}", json={"registration_number": "INPE 112233445"})
        assert r.status_code == 200, r.text
        for who, name, city in (
            ("pharmacist", "Pharmacie Al Amal", "Rabat"),
            ("pharmacist2", "Pharmacie du Port", "Salé"),
        ):
            r = c.post(
                "/pharmacies", json={"name": name, "city": city, "address": "12 av. Hassan II", "license_no": "RB-0042"}
            )
            assert r.status_code == 201, r.text
            r = c.post(f"/pharmacies/{r.json()['id']}/members", json={"user_id": str(cast.users[who])})
            assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def rx(make_database: Any) -> Iterator[RxCast]:
    dsn = make_database("plain")
    upgrade(dsn)
    cast = _seed(dsn)
    settings = make_settings(dsn, cookie_secure=False, ext={"alerts": {"enabled": False}})
    with LiveServer(create_app(settings)) as server:
        cast.url = server.url
        _admin_setup(cast)
        yield cast


async def shot(target: Any, name: str, update_docs: bool) -> bytes:
    """A screenshot of a page (its viewport) or of one element (a locator) into test-artifacts, and docs if asked."""
    page = getattr(target, "page", target)  # a locator knows its page
    await page.evaluate("document.activeElement && document.activeElement.blur()")  # no focus ring in the picture
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    png: bytes = await target.screenshot(path=str(path))
    if update_docs:
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SHOTS / f"{name}.png")
    return png


async def _login(page: Any, cast: RxCast, who: str, ready: str) -> None:
    await page.goto(f"{cast.url}/")
    await page.fill("#username", cast.username(who))
    await page.fill("#password", PASSWORD)
    await page.press("#password", "Enter")
    await page.wait_for_selector(ready)


async def _axe(page: Any, selector: str) -> None:
    """axe-core on one region of the page: no serious or critical violation."""
    axe = REPO / "node_modules" / "axe-core" / "axe.min.js"
    assert axe.is_file(), "axe-core is missing: `make setup` (npm install) puts it in node_modules/"
    if not await page.evaluate("typeof axe !== 'undefined'"):
        await page.add_script_tag(path=str(axe))
    found = await page.evaluate(
        """async (sel) => (await axe.run(document.querySelector(sel), { resultTypes: ['violations'] })).violations
            .map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 3) }))""",
        selector,
    )
    serious = [v for v in found if v["impact"] in ("serious", "critical")]
    assert serious == [], (selector, serious)


def _decode_qr(png: bytes) -> list[str]:
    import zxingcpp
    from PIL import Image

    return [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]


async def _checked(page: Any, root: str, code: str, present: bool = True) -> None:
    """Wait until the live check of the form reports (or no longer reports) an issue code."""
    sel = f"{root} .rx-issue[data-code='{code}']"
    await wait_for(page, f'{"!!" if present else "!"}document.querySelector("{sel}")', timeout_ms=10_000)


async def test_screenshots_prescription_journey(rx: RxCast, browser: Any, update_docs: bool) -> None:
    errors: list[str] = []
    doctor_ctx = await browser.new_context(viewport={"width": 1360, "height": 1000}, locale="fr-FR", bypass_csp=True)
    page = await doctor_ctx.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await _login(page, rx, "doctor", "table.patients tbody tr")

    # Patient page: record an allergy to the penicillins (ATC J01C) with the keyboard-reachable form.
    await page.goto(f"{rx.url}/#/patient/{rx.patient_id}")
    await page.wait_for_selector(".rx-allergy-add")
    await page.get_by_label("Substance (DCI)").fill("pénicillines")
    await page.get_by_label("Classe ATC (facultatif)").fill("J01C")
    await page.get_by_label("Note (réaction, année)").fill("urticaire 2019")
    await page.get_by_role("button", name="Ajouter l’allergie").click()
    await page.wait_for_selector(".rx-allergy[data-substance='pénicillines']")

    # Consultation: the ordonnance panel is open; amoxicillin is flagged against the allergy.
    await page.click("#start-consult")
    await wait_for(page, "document.querySelector('main').dataset.consultationId || null")
    form = ".rx-panel"
    await page.wait_for_selector(f"{form} .rx-allergies.has-allergies")
    search = page.get_by_role("combobox", name="Rechercher un médicament")
    await search.fill("amox")
    await page.wait_for_selector(f"{form} .rx-option")
    await search.press("Enter")  # the first option: keyboard only
    await _checked(page, form, "allergy")
    assert "J01C" in (await page.text_content(f"{form} .rx-issue[data-code='allergy']") or "")
    await page.click(f"{form} .rx-line:nth-of-type(1) .rx-remove")

    # Paracetamol twice: duplicate DCI; quantity zero; ten tablets per intake: dose out of range.
    for _ in range(2):
        await search.fill("paracetamol 1 g comp")  # accents and case do not matter
        await page.wait_for_selector(f"{form} .rx-option")
        await search.press("Enter")
    await _checked(page, form, "duplicate_inn")
    await page.click(f"{form} .rx-line:nth-of-type(2) .rx-remove")
    await _checked(page, form, "duplicate_inn", present=False)
    line1 = f"{form} .rx-line:nth-of-type(1)"
    await page.fill(f"{line1} .rx-quantity", "0")
    await _checked(page, form, "quantity_zero")
    await page.fill(f"{line1} .rx-quantity", "2")
    await page.fill(f"{line1} .rx-dose", "10")
    await _checked(page, form, "dose_out_of_range")
    await page.fill(f"{line1} .rx-dose", "1")
    await page.fill(f"{line1} .rx-per-day", "3")
    await page.fill(f"{line1} .rx-days", "5")
    await page.fill(
        f"{line1} .rx-instructions", "En cas de fièvre ou de douleur, espacer les prises d’au moins 6 heures."
    )
    await _checked(page, form, "dose_out_of_range", present=False)

    await search.fill("ibuprofène 400")
    await page.wait_for_selector(f"{form} .rx-option")
    await search.press("Enter")
    line2 = f"{form} .rx-line:nth-of-type(2)"
    await page.fill(f"{line2} .rx-per-day", "2")
    await page.fill(f"{line2} .rx-days", "5")
    await page.fill(f"{line2} .rx-repeats", "1")
    await page.fill(f"{line2} .rx-instructions", "Pendant les repas.")
    await page.wait_for_timeout(800)  # the last live check
    await page.locator(form).evaluate("el => window.scrollTo(0, el.getBoundingClientRect().top + window.scrollY - 52)")
    await shot(page, "prescription-form", update_docs)
    await _axe(page, form)
    await page.get_by_role("button", name="Émettre et signer l’ordonnance").click()
    prescription_id = await wait_for(
        page, f"document.querySelector('{form} .rx-editor').dataset.prescriptionId || null"
    )
    await page.wait_for_selector(f"{form} .rx-item[data-prescription-id='{prescription_id}'][data-status='issued']")

    # Print: the server's ordonnance page in a new tab; its QR code decoded from a screenshot.
    async with doctor_ctx.expect_page() as popup_info:
        await page.click(f"{form} .rx-result a[data-print='html']")
    printed = await popup_info.value
    await printed.wait_for_load_state("load")
    await printed.set_viewport_size({"width": 900, "height": 1300})
    png = await shot(printed, "ordonnance", update_docs)
    decoded = await asyncio.to_thread(_decode_qr, png)
    assert len(decoded) == 1, decoded
    qr_text = decoded[0]
    assert f"/#/pharmacy/{prescription_id}/" in qr_text
    await printed.close()

    # The pharmacist scans: the decoded text is typed into the scan field, then Enter.
    pharma_ctx = await browser.new_context(viewport={"width": 1200, "height": 1000}, locale="fr-FR", bypass_csp=True)
    ph = await pharma_ctx.new_page()
    ph.on("pageerror", lambda exc: errors.append(str(exc)))
    await _login(ph, rx, "pharmacist", ".rx-scan")
    assert await ph.locator("#nav a[href='#/patients']").is_hidden()
    assert "Pharmacie Al Amal" in (await ph.text_content(".rx-pharmacy-name") or "")
    await ph.get_by_label("QR code de l’ordonnance").fill(qr_text)
    await ph.keyboard.press("Enter")
    await ph.wait_for_selector(".rx-sig.ok")
    assert await ph.get_attribute("main", "data-signature") == "valid"
    key_id = (await ph.text_content(".rx-sig.ok") or "").rsplit(" ", 1)[1].rstrip(")")
    body = await ph.text_content(".rx-pharmacy-rx") or ""
    assert "Fatima Zahra Alaoui" in body
    assert "INPE 112233445" in body
    assert "urticaire" not in body  # the allergy list is not the pharmacy's to see
    # Part of line 1 (1 box of 2) with its batch; 1 box of line 2 as a generic of the same DCI.
    pl1, pl2 = ".rx-pline[data-line-no='1']", ".rx-pline[data-line-no='2']"
    await ph.fill(f"{pl1} .rx-dqty", "1")
    await ph.fill(f"{pl1} .rx-batch", "L2411A")
    await ph.fill(f"{pl2} .rx-dqty", "1")
    await ph.fill(f"{pl2} .rx-batch", "IB-0925")
    await wait_for(ph, f'document.querySelectorAll("{pl2} .rx-generic option").length > 1')
    generic = await ph.eval_on_selector(f"{pl2} .rx-generic option:nth-child(2)", "o => [o.value, o.textContent]")
    await ph.select_option(f"{pl2} .rx-generic", generic[0])
    await ph.get_by_role("button", name="Délivrer").click()
    await ph.wait_for_selector(".rx-dispense-result:not(:empty)")
    assert await ph.get_attribute("main", "data-status") == "partially_dispensed"
    assert "partiellement délivrée" in (await ph.text_content(".rx-pharmacy-rx h2") or "")
    await shot(ph, "pharmacy", update_docs)
    await _axe(ph, "main")

    # Another pharmacy dispenses the last box of line 1 meanwhile; this one then tries it too: 409, said in words.
    code = qr_text.rsplit("/", 1)[1]
    token2 = await asyncio.to_thread(login, rx.url, rx.username("pharmacist2"))
    r = await asyncio.to_thread(
        httpx.post,
        f"{rx.url}/api/v1/pharmacy/prescriptions/{prescription_id}/dispense",
        json={"access_code": code, "lines": [{"line_no": 1, "quantity": 1, "batch": "X1"}]},
        headers={"Authorization": f"Bearer {token2}"},
    )
    assert r.status_code == 201, r.text
    await ph.fill(f"{pl1} .rx-dqty", "1")
    await ph.fill(f"{pl2} .rx-dqty", "0")
    await ph.get_by_role("button", name="Délivrer").click()
    await ph.wait_for_selector(".rx-dispense-error:not(:empty)")
    conflict = await ph.get_attribute("main", "data-conflict")
    assert conflict in ("stale", "already_dispensed", "over_dispense"), conflict
    assert "ailleurs" in (await ph.text_content(".rx-dispense-error") or "")
    assert await ph.locator(f"{pl1}[data-status='dispensed']").count() == 1  # reloaded: nothing left on line 1
    await shot(ph, "pharmacy-conflict", update_docs)

    # The doctor's patient page: status and the dispense events (adherence at a glance).
    await page.goto(f"{rx.url}/#/patient/{rx.patient_id}")
    entry = page.locator(f".rx-section .rx-item[data-prescription-id='{prescription_id}']")
    await entry.locator(".rx-dispense").first.wait_for()
    assert await entry.get_attribute("data-status") == "partially_dispensed"
    assert await entry.locator(".rx-dispense").count() == 2
    assert "L2411A" in (await entry.text_content() or "")
    assert "générique délivré" in (await entry.text_content() or "")
    await shot(entry, "patient-page-prescriptions", update_docs)
    await _axe(page, ".rx-section")
    # The patient's own space: "partiellement délivrée", what is left, and the QR on demand.
    patient_ctx = await browser.new_context(viewport={"width": 1000, "height": 900}, locale="fr-FR", bypass_csp=True)
    pt = await patient_ctx.new_page()
    pt.on("pageerror", lambda exc: errors.append(str(exc)))
    await _login(pt, rx, "patient", f".rx-mine .rx-item[data-prescription-id='{prescription_id}']")
    item = pt.locator(f".rx-mine .rx-item[data-prescription-id='{prescription_id}']")
    assert await item.get_attribute("data-status") == "partially_dispensed"
    assert "partiellement délivrée" in (await item.locator(".rx-status").text_content() or "")
    await item.get_by_role("button", name="Afficher le QR code pour la pharmacie").click()
    await pt.wait_for_selector(".rx-qr img")
    shown = (await pt.text_content(".rx-access-code") or "").replace("-", "")
    assert shown == code.replace("-", "").upper()
    await item.scroll_into_view_if_needed()
    await shot(pt, "patient-prescriptions", update_docs)
    await _axe(pt, "#me-prescriptions")

    # The doctor cancels it, with a reason.
    await entry.get_by_role("button", name="Annuler l’ordonnance").click()
    await entry.get_by_label("Motif de l’annulation").fill("Traitement arrêté après contrôle.")
    await entry.get_by_role("button", name="Confirmer l’annulation").click()
    await page.wait_for_selector(
        f".rx-section .rx-item[data-prescription-id='{prescription_id}'][data-status='cancelled']"
    )

    # Cancellation shown everywhere: the pharmacy cannot dispense it any more, the patient sees it cancelled.
    await ph.goto(f"{rx.url}/#/pharmacy")
    await ph.get_by_label("QR code de l’ordonnance").fill(qr_text)
    await ph.keyboard.press("Enter")
    await ph.wait_for_selector(".rx-pharmacy-rx .rx-cancelled")
    assert await ph.locator(".rx-dispense-btn").count() == 0
    await pt.reload()
    await pt.wait_for_selector(f".rx-mine .rx-item[data-prescription-id='{prescription_id}'][data-status='cancelled']")
    assert await pt.locator(".rx-show-qr").count() == 0  # nothing left to show at a pharmacy
    await pt.select_option("#lang", "ar")  # the patient space in Arabic: the status too
    cancelled = f".rx-mine .rx-item[data-prescription-id='{prescription_id}'] .rx-status"
    await pt.wait_for_function(f"document.querySelector(\"{cancelled}\")?.textContent === 'ملغاة'")
    assert await pt.get_attribute("html", "dir") == "rtl"

    # In English: the pharmacy page and the status.
    await ph.select_option("#lang", "en")
    await ph.wait_for_function("document.querySelector('main h1')?.textContent === 'Dispensing a prescription'")
    await ph.get_by_label("Prescription QR code").fill(qr_text)
    await ph.keyboard.press("Enter")
    await ph.wait_for_selector(".rx-pharmacy-rx .rx-cancelled")
    assert await ph.text_content(".rx-pharmacy-rx h2 .rx-status") == "cancelled"
    assert await ph.text_content(".rx-sig.ok") == "✓ Signature verified (Ed25519, key " + key_id + ")"
    assert errors == []
    for ctx in (doctor_ctx, pharma_ctx, patient_ctx):
        await ctx.close()


async def test_screenshots_tampered_prescription_is_red_and_not_dispensed(
    rx: RxCast, browser: Any, update_docs: bool
) -> None:
    """A stored line changed after signing: the pharmacy page opened from the QR's URL shows the red cross, offers no
    dispense, and the code leaves the address bar once read."""
    token = await asyncio.to_thread(login, rx.url, rx.username("doctor"))
    line = {
        "formulary_id": "amlodipine-5mg-comprime", "dose": 1, "dose_unit": "comprimé", "times_per_day": 1,
        "duration_days": 30, "quantity": 1, "quantity_unit": "boîte", "repeats": 2, "instructions": "Le matin.",
    }  # fmt: skip
    r = await asyncio.to_thread(
        httpx.post,
        f"{rx.url}/api/v1/patients/{rx.patient_id}/prescriptions",
        json={"lines": [line]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 201, r.text
    created = r.json()
    with psycopg.connect(rx.dsn, autocommit=True) as conn:
        conn.execute("update prescription_lines set quantity = 9 where prescription_id = %s", (created["id"],))
    context = await browser.new_context(viewport={"width": 1200, "height": 900}, locale="fr-FR", bypass_csp=True)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await _login(page, rx, "pharmacist", ".rx-scan")
    code = created["access_code"].replace("-", "")
    await page.goto(f"{rx.url}/#/pharmacy/{created['id']}/{code}")
    await page.wait_for_selector(".rx-sig.bad[role='alert']")
    assert await page.get_attribute("main", "data-signature") == "invalid"
    assert "Ne pas délivrer" in (await page.text_content(".rx-sig.bad") or "")
    assert await page.locator(".rx-dispense-btn").count() == 0
    assert await page.locator(".rx-dqty").count() == 0
    assert code not in page.url
    await shot(page, "pharmacy-tampered", update_docs)
    assert errors == []
    await context.close()


async def test_a_change_is_a_new_version(rx: RxCast, browser: Any) -> None:
    """The prescriber changes an issued, not yet dispensed prescription: the editor starts from its lines, issuing makes
    version 2 and the first one is shown cancelled as replaced."""
    token = await asyncio.to_thread(login, rx.url, rx.username("doctor"))
    line = {
        "formulary_id": "metformine-500mg-comprime", "dose": 1, "dose_unit": "comprimé", "times_per_day": 2,
        "duration_days": 30, "quantity": 2, "quantity_unit": "boîte", "repeats": 0, "instructions": "Au repas.",
    }  # fmt: skip
    r = await asyncio.to_thread(
        httpx.post,
        f"{rx.url}/api/v1/patients/{rx.patient_id}/prescriptions",
        json={"lines": [line]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 201, r.text
    first = r.json()["id"]
    context = await browser.new_context(viewport={"width": 1360, "height": 1000}, locale="fr-FR", bypass_csp=True)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await _login(page, rx, "doctor", "table.patients tbody tr")
    await page.goto(f"{rx.url}/#/patient/{rx.patient_id}")
    item = page.locator(f".rx-section .rx-item[data-prescription-id='{first}']")
    await item.get_by_role("button", name="Modifier (nouvelle version)").click()
    editor = page.locator(".rx-section .rx-editor")
    await editor.locator(".rx-revising").wait_for()
    assert await editor.locator(".rx-line").count() == 1
    assert await editor.locator(".rx-line .rx-instructions").input_value() == "Au repas."
    await editor.locator(".rx-line .rx-per-day").fill("3")
    await editor.get_by_role("button", name="Émettre et signer la nouvelle version").click()
    second = await wait_for(page, "document.querySelector('.rx-section .rx-editor').dataset.prescriptionId || null")
    assert second != first
    await page.wait_for_selector(f".rx-section .rx-item[data-prescription-id='{first}'][data-status='cancelled']")
    assert "Remplacée" in (await item.text_content() or "")
    new_item = page.locator(f".rx-section .rx-item[data-prescription-id='{second}']")
    assert await new_item.get_attribute("data-status") == "issued"
    assert "version 2" in (await new_item.text_content() or "")
    assert "3 fois par jour" in (await new_item.text_content() or "")
    assert errors == []
    await context.close()
