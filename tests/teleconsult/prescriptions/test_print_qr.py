"""The printed ordonnance: PDF (rendered with PDFium) and HTML (screenshot by headless Chromium), QR decoded with
zxing-cpp, and the decoded text fetches the prescription at the pharmacy."""

from __future__ import annotations

import io
import shutil

import pypdfium2
import pytest
import zxingcpp
from PIL import Image

from tests.dashboard.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.teleconsult.prescriptions.conftest import RxEnv
from tests.teleconsult.prescriptions.helpers import AMOXICILLINE, line_json


def _issue(env: RxEnv) -> dict:
    lines = [line_json(), line_json(AMOXICILLINE, dose_unit="gélule", quantity=1, instructions="pendant les repas")]
    r = env.call("POST", f"/patients/{env.seeded.p1}/prescriptions", "doctor", json={"lines": lines})
    assert r.status_code == 201, r.text
    return r.json()


def _decode(image: Image.Image) -> str:
    found = zxingcpp.read_barcodes(image)
    qr = [b for b in found if b.format == zxingcpp.BarcodeFormat.QRCode]
    assert len(qr) == 1, found
    return qr[0].text


def _fetch_with(env: RxEnv, scanned: str, rx: dict) -> None:
    r = env.call("POST", "/pharmacy/lookup", "pharmacist", json={"qr": scanned})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == rx["id"]
    assert r.json()["signature"]["valid"] is True


def test_pdf_qr_decodes_and_fetches_the_prescription(rx_env: RxEnv) -> None:
    rx = _issue(rx_env)
    r = rx_env.call("GET", f"/prescriptions/{rx['id']}/ordonnance.pdf", "doctor")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf"
    pdf = pypdfium2.PdfDocument(r.content)
    page = pdf[0]
    text = page.get_textpage().get_text_range()
    for expected in ("rx-doctor", "INPE 112233445", "Patient One", "Paracétamol 500 mg, comprimé", "Valable jusqu'au",
                     "à délivrer avant le", rx["access_code"]):  # fmt: skip
        assert expected in text, expected
    image = page.render(scale=2).to_pil()
    scanned = _decode(image)
    expected_payload = rx_env.call("GET", f"/prescriptions/{rx['id']}/access-code", "patient").json()["qr_payload"]
    assert scanned == expected_payload
    assert scanned.endswith(f"/#/pharmacy/{rx['id']}/{rx['access_code'].replace('-', '')}")
    _fetch_with(rx_env, scanned, rx)
    # the patient prints it too; a nurse of the care team does not
    assert rx_env.call("GET", f"/prescriptions/{rx['id']}/ordonnance.pdf", "patient").status_code == 200
    assert rx_env.call("GET", f"/prescriptions/{rx['id']}/ordonnance.pdf", "nurse").status_code == 403


def test_qr_svg_for_the_phone(rx_env: RxEnv) -> None:
    rx = _issue(rx_env)
    r = rx_env.call("GET", f"/prescriptions/{rx['id']}/qr.svg", "patient")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in r.content


@pytest.mark.browser
async def test_html_ordonnance_screenshot_qr_fetches_the_prescription(rx_env: RxEnv) -> None:
    if not shutil.which(CHROMIUM):
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    from playwright.async_api import async_playwright

    rx = _issue(rx_env)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 794, "height": 1123})  # A4 at 96 dpi
            await page.set_extra_http_headers(rx_env.h("doctor"))
            resp = await page.goto(f"{rx_env.url}/api/v1/prescriptions/{rx['id']}/ordonnance.html")
            assert resp is not None
            assert resp.status == 200
            body = await page.inner_text("body")
            assert "Ordonnance" in body
            assert "INPE 112233445" in body
            assert rx["access_code"] in body
            shot = await page.screenshot(full_page=True)
        finally:
            await browser.close()
    scanned = _decode(Image.open(io.BytesIO(shot)))
    _fetch_with(rx_env, scanned, rx)
