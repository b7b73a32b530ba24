"""e-Prescriptions (issue 18): formulary, writing rules, signing, access codes, dispensing, printing.

Pure modules (no I/O): :mod:`.formulary` (loading/search of the bundled list), :mod:`.rules` (checks, validity,
remaining quantities, statuses, dispense validation), :mod:`.codes` (access codes and the QR payload),
:mod:`.signing` (canonical JSON and Ed25519), :mod:`.printing` (HTML and PDF of the ordonnance).
:mod:`.store` is the PostgreSQL adapter. See docs/prescriptions.md.
"""
