"""The printable ordonnance: an A4 HTML page and a PDF (ReportLab), in French, with the QR code (segno).

Pure: ``html_page(rx, ...) -> str`` and ``pdf(rx, ...) -> bytes``. Both show the prescriber (name, registration number),
the patient (name, birth date), the date, the lines with their dosage, quantity and renewals, the validity (antibiotic
lines: their own shorter date), the QR code of :func:`teleconsult.prescriptions.codes.qr_payload` and the access code in
clear, the signature key id, and "ANNULÉE" across a cancelled prescription.

Why ReportLab: pure Python (a wheel, no system libraries), maintained, draws the QR as vector rectangles; WeasyPrint
would need Pango/Cairo from Debian on every machine for a one-page document.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from html import escape
from typing import Final
from zoneinfo import ZoneInfo

import segno
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas

from teleconsult.fhir.medication import dosage_text
from teleconsult.prescriptions import codes
from teleconsult.prescriptions.model import Line, Prescription

LOCAL_TZ: Final = ZoneInfo("Africa/Casablanca")
#: Headers of the HTML page: its own inline style, no script, framable by the dashboard (same origin) for printing.
HTML_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'",
    "X-Frame-Options": "SAMEORIGIN",
}


def _date(at: datetime) -> str:
    return at.astimezone(LOCAL_TZ).strftime("%d/%m/%Y")


def qr(payload: str) -> segno.QRCode:
    """The QR code (error correction M: survives a crease or a smudge)."""
    return segno.make(payload, error="m", micro=False)


def qr_svg(payload: str, scale: int = 4) -> str:
    """The QR as a standalone SVG document."""
    buf = io.BytesIO()
    qr(payload).save(buf, kind="svg", scale=scale, border=4, xmldecl=True)
    return buf.getvalue().decode()


def _quantity(line: Line) -> str:
    unit = line.quantity_unit
    if line.quantity > 1 and " " not in unit and not unit.endswith(("s", "x")):
        unit += "s"
    text = f"{line.quantity} {unit}"
    if line.repeats:
        text += f", à renouveler {line.repeats} fois"
    return text


def _line_notes(rx: Prescription, line: Line) -> list[str]:
    notes = []
    if line.valid_until != rx.valid_until:
        notes.append(f"à délivrer avant le {_date(line.valid_until)}")
    if not line.substitution_allowed:
        notes.append("non substituable")
    if line.free_text:
        notes.append("hors formulaire")
    return notes


def html_page(rx: Prescription, *, payload: str, code: str, cancelled: bool) -> str:
    """The ordonnance as a standalone HTML page styled for A4 print."""
    items = []
    for ln in rx.lines:
        notes = _line_notes(rx, ln)
        items.append(
            "<li><strong>{m}</strong><div>{d}</div><div>Quantité : {q}</div>{n}</li>".format(
                m=escape(ln.medicine),
                d=escape(dosage_text(ln)),
                q=escape(_quantity(ln)),
                n=f'<div class="note">{escape(", ".join(notes))}</div>' if notes else "",
            )
        )
    svg = qr(payload).svg_inline(scale=4, border=4)
    reg = rx.prescriber.registration_number or "non renseigné"
    birth = f", né(e) le {rx.patient.birth_date.strftime('%d/%m/%Y')}" if rx.patient.birth_date else ""
    banner = '<div class="cancelled">ANNULÉE</div>' if cancelled else ""
    return f"""<!doctype html>
<html lang="fr"><head><meta charset="utf-8"><title>Ordonnance {escape(str(rx.id))}</title>
<style>
@page {{ size: A4; margin: 18mm; }}
@media screen {{ body {{ padding: 12mm 0; }} }}
body {{ font-family: "DejaVu Sans", Arial, sans-serif; font-size: 11pt; color: #111;
  max-width: 180mm; margin: 0 auto; }}
header {{ display: flex; justify-content: space-between; border-bottom: 2px solid #111; padding-bottom: 4mm; }}
h1 {{ font-size: 14pt; margin: 0; }} .muted {{ color: #555; font-size: 9pt; }}
ol {{ padding-left: 6mm; }} li {{ margin: 4mm 0; }} .note {{ font-style: italic; font-size: 9pt; }}
footer {{ display: flex; gap: 8mm; align-items: center; border-top: 1px solid #999;
  margin-top: 10mm; padding-top: 4mm; }}
.code {{ font-family: "DejaVu Sans Mono", monospace; font-size: 14pt; letter-spacing: 1px; }}
.cancelled {{ color: #b00; font-size: 28pt; font-weight: bold; text-align: center; border: 3px solid #b00; }}
</style></head>
<body>
{banner}
<header><div><h1>{escape(rx.prescriber.display_name)}</h1>
<div>N° d'inscription : {escape(reg)}</div></div>
<div>Le {_date(rx.issued_at)}</div></header>
<p><strong>Patient :</strong> {escape(rx.patient.display_name)}{escape(birth)}</p>
<h2>Ordonnance</h2>
<ol>{"".join(items)}</ol>
{f"<p>{escape(rx.note)}</p>" if rx.note else ""}
<p>Valable jusqu'au {_date(rx.valid_until)}.</p>
<footer><div class="qr">{svg}</div>
<div><div>Code d'accès pharmacie :</div><div class="code">{escape(codes.display(code))}</div>
<div class="muted">Ordonnance n° {escape(str(rx.id))} — version {rx.version}</div>
<div class="muted">Signée électroniquement par tbib (Ed25519, clé {escape(rx.key_id)})</div>
<div class="muted">Ne communiquez ce code qu'à votre pharmacien.</div></div></footer>
</body></html>
"""


def pdf(rx: Prescription, *, payload: str, code: str, cancelled: bool) -> bytes:
    """The ordonnance as a one-page A4 PDF (more lines continue on further pages)."""
    buf = io.BytesIO()
    c = Canvas(buf, pagesize=A4, invariant=True)
    c.setTitle(f"Ordonnance {rx.id}")
    c.setAuthor(rx.prescriber.display_name)
    width, height = A4
    left, y = 20 * mm, height - 22 * mm
    c.setFont("Helvetica-Bold", 14)
    c.drawString(left, y, rx.prescriber.display_name)
    c.setFont("Helvetica", 10)
    c.drawRightString(width - left, y, f"Le {_date(rx.issued_at)}")
    y -= 6 * mm
    c.drawString(left, y, f"N° d'inscription : {rx.prescriber.registration_number or 'non renseigné'}")
    y -= 4 * mm
    c.line(left, y, width - left, y)
    y -= 10 * mm
    birth = f", né(e) le {rx.patient.birth_date.strftime('%d/%m/%Y')}" if rx.patient.birth_date else ""
    c.setFont("Helvetica-Bold", 11)
    c.drawString(left, y, "Patient :")
    c.setFont("Helvetica", 11)
    c.drawString(left + 18 * mm, y, f"{rx.patient.display_name}{birth}")
    y -= 12 * mm
    c.setFont("Helvetica-Bold", 13)
    c.drawString(left, y, "Ordonnance")
    y -= 9 * mm
    for ln in rx.lines:
        if y < 80 * mm:
            c.showPage()
            y = height - 25 * mm
        c.setFont("Helvetica-Bold", 11)
        c.drawString(left, y, f"{ln.line_no}. {ln.medicine}"[:95])
        c.setFont("Helvetica", 10)
        y -= 5 * mm
        c.drawString(left + 5 * mm, y, dosage_text(ln)[:110])
        y -= 5 * mm
        c.drawString(left + 5 * mm, y, f"Quantité : {_quantity(ln)}")
        notes = _line_notes(rx, ln)
        if notes:
            y -= 5 * mm
            c.setFont("Helvetica-Oblique", 9)
            c.drawString(left + 5 * mm, y, ", ".join(notes))
        y -= 8 * mm
    c.setFont("Helvetica", 10)
    if rx.note:
        c.drawString(left, y, rx.note[:110])
        y -= 6 * mm
    c.drawString(left, y, f"Valable jusqu'au {_date(rx.valid_until)}.")
    _draw_qr(c, payload, x=left, y=20 * mm, size=45 * mm)
    tx = left + 50 * mm
    c.drawString(tx, 58 * mm, "Code d'accès pharmacie :")
    c.setFont("Courier-Bold", 16)
    c.drawString(tx, 50 * mm, codes.display(code))
    c.setFont("Helvetica", 8)
    c.drawString(tx, 42 * mm, f"Ordonnance n° {rx.id} — version {rx.version}")
    c.drawString(tx, 37 * mm, f"Signée électroniquement par tbib (Ed25519, clé {rx.key_id})")
    c.drawString(tx, 32 * mm, "Ne communiquez ce code qu'à votre pharmacien.")
    if cancelled:
        c.saveState()
        c.setFillColorRGB(0.7, 0, 0)
        c.setFont("Helvetica-Bold", 60)
        c.translate(width / 2, height / 2)
        c.rotate(35)
        c.drawCentredString(0, 0, "ANNULÉE")
        c.restoreState()
    c.showPage()
    c.save()
    return buf.getvalue()


def _draw_qr(c: Canvas, payload: str, *, x: float, y: float, size: float) -> None:
    rows = list(qr(payload).matrix_iter(border=4))
    cell = size / len(rows)
    c.saveState()
    c.setFillColorRGB(0, 0, 0)
    for r, row in enumerate(rows):
        for col, dark in enumerate(row):
            if dark:
                c.rect(x + col * cell, y + size - (r + 1) * cell, cell, cell, stroke=0, fill=1)
    c.restoreState()


def generated_at() -> datetime:
    """Now (UTC), for headers."""
    return datetime.now(UTC)
