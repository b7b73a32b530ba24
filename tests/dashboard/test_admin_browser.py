"""Administration page in a real browser (headless Debian Chromium), issue 19 item 6: the admin creates a doctor and a
patient (with its record), assigns the doctor to the patient's care team, enrols a gateway (one-time code and QR
shown), the gateway redeems the code over HTTP, the admin enrols a device and revokes the gateway after an inline
confirmation (Escape cancels, focus kept). French journey, then the page in English. Screenshots in
test-artifacts/dashboard/ (docs/screenshots/ with `-k screenshots`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from playwright.async_api import expect

from teleconsult.api.app import create_app
from teleconsult.security import provisioning
from teleconsult.store.migrate import upgrade
from tests.dashboard.test_browser import shot as browser_shot
from tests.dashboard.test_browser import wait_for
from tests.teleconsult.api.helpers import PASSWORD, LiveServer, make_settings, password_hash

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def admin_site(make_database: Any) -> Iterator[tuple[str, str, str]]:
    """``(url, dsn, admin username)``: an empty platform with one admin."""
    dsn = make_database("plain")
    upgrade(dsn)
    admin = f"adm-{uuid.uuid4().hex[:6]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "insert into users (username, display_name, role, password_hash) values (%s, 'Admin', 'admin', %s)",
            (admin, password_hash()),
        )
    settings = make_settings(dsn, cookie_secure=False, ext={"alerts": {"enabled": False}})
    with LiveServer(create_app(settings)) as server:
        yield server.url, dsn, admin


async def shot(page: Any, name: str, update_docs: bool) -> None:
    """The admin pages are long: whole-page screenshots."""
    await browser_shot(page, name, update_docs, full_page=True)


async def test_screenshots_admin_enrolment_journey(
    admin_site: tuple[str, str, str], browser: Any, update_docs: bool
) -> None:
    url, dsn, admin = admin_site
    tag = uuid.uuid4().hex[:4]
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="fr-FR", bypass_csp=True)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{url}/")
    await page.fill("#username", admin)
    await page.fill("#password", PASSWORD)
    await page.press("#password", "Enter")
    await page.wait_for_selector("#nav a[href='#/admin']:not([hidden])")
    await page.click("#nav a[href='#/admin']")
    await page.wait_for_selector("main.admin h1")
    await wait_for(page, "window.tbib.view && window.tbib.view.users !== undefined")

    # a doctor, created with the keyboard only (labels name every field)
    form = page.locator("form.admin-user-form")
    await form.get_by_label("Identifiant").fill(f"dr-benali-{tag}")
    await page.keyboard.press("Tab")
    await page.keyboard.type("Dr Amina Benali")
    await page.keyboard.press("Tab")
    await page.keyboard.type("long-enough-pw")
    await page.keyboard.press("Enter")
    await page.wait_for_selector(f"tr[data-username='dr-benali-{tag}']")
    assert "Compte dr-benali-" in await page.locator(".admin-status").inner_text()
    # a patient: the record is created with the account
    await form.get_by_label("Identifiant").fill(f"fatima-{tag}")
    await form.get_by_label("Nom affiché").fill("Fatima Zahra Alaoui")
    await form.get_by_label("Mot de passe (10 caractères au moins)").fill("long-enough-pw")
    await form.get_by_label("Rôle").select_option("patient")
    await form.get_by_label("Nom du patient (nouveau dossier)").fill("Fatima Zahra Alaoui")
    await form.get_by_role("button", name="Créer").click()
    await page.wait_for_selector(f"tr[data-username='fatima-{tag}']")

    # care team
    team = page.locator("form.admin-team-form")
    await team.get_by_label("Soignant").select_option(label="Dr Amina Benali (Médecin)")
    await team.get_by_label("Patient").select_option(label="Fatima Zahra Alaoui")
    await team.get_by_role("button", name="Affecter").click()
    await page.wait_for_selector("table.admin-team-table tbody tr")
    assert "affecté·e à Fatima Zahra Alaoui" in await page.locator(".admin-status").inner_text()

    # gateway enrolment: the one-time code and its QR
    gw = f"gw-fatima-{tag}"
    gform = page.locator("form.admin-gw-form")
    await gform.get_by_label("Identifiant de la passerelle").fill(gw)
    await gform.get_by_label("Patient").select_option(label="Fatima Zahra Alaoui")
    await gform.get_by_role("button", name="Générer le code").click()
    await page.wait_for_selector(".admin-code-value code")
    code = await page.locator(".admin-code-value code").inner_text()
    assert await page.locator(".admin-qr svg").count() == 1
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select code_hash from gateway_provisioning_codes where gateway_id = %s", (gw,)).fetchone()
    assert row is not None
    assert bytes(row[0]) == provisioning.code_hash(code)
    await shot(page, "admin-gateway-code", update_docs)

    # the gateway redeems it over HTTP; the list shows the credential as active after a reload of the view
    r = await asyncio.to_thread(httpx.post, f"{url}/api/v1/gateways/provision", json={"code": code})
    assert r.status_code == 200, r.text
    await page.click("#nav a[href='#/patients']")
    await page.click("#nav a[href='#/admin']")
    row_gw = page.locator(f"tr[data-gateway='{gw}']")
    await page.wait_for_selector(f"tr[data-gateway='{gw}'][data-credential='active']")

    # a device
    await row_gw.get_by_role("button", name="Appareils").click()
    dev = page.locator("form.admin-dev-form")
    await dev.get_by_label("Adresse Bluetooth").fill("C0:FF:EE:00:00:07")
    await dev.get_by_label("Modèle").fill("Berry BM1000")
    await dev.get_by_role("button", name="Enrôler l’appareil").click()  # noqa: RUF001
    await page.wait_for_selector("table.admin-dev-table tr[data-device]")
    # the gateway list reloads after the device table: its count follows (expect retries until it does or times out)
    await expect(row_gw.locator("td").nth(3)).to_have_text("1")

    # revoke: Escape cancels (focus back on the button), then confirm
    await row_gw.get_by_role("button", name="Révoquer").click()
    assert await page.evaluate("document.activeElement.textContent") == "Annuler"
    await page.keyboard.press("Escape")
    assert await page.evaluate("document.activeElement.textContent") == "Révoquer"
    await row_gw.get_by_role("button", name="Révoquer").click()
    await row_gw.get_by_role("button", name="Confirmer la révocation").click()
    await page.wait_for_selector(f"tr[data-gateway='{gw}'][data-credential='revoked']")
    with psycopg.connect(dsn) as conn:
        revoked = conn.execute("select revoked_at from gateway_credentials where gateway_id = %s", (gw,)).fetchone()
    assert revoked is not None
    assert revoked[0] is not None
    await shot(page, "admin-revoked", update_docs)

    # English
    await page.evaluate("localStorage.setItem('tbib.lang', 'en')")
    await page.reload()
    await page.wait_for_selector("main.admin h2#adm-users-h")
    assert await page.locator("#adm-users-h").inner_text() == "Accounts"
    assert await page.locator(f"tr[data-gateway='{gw}'] .admin-cred").inner_text() == "revoked"
    assert await page.locator("form.admin-user-form").get_by_label("Username").count() == 1
    await shot(page, "admin-en", update_docs)
    assert errors == []
    await context.close()
