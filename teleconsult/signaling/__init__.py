"""Teleconsultation signaling: a pure room state machine (:mod:`.rooms`, :mod:`.core`) under a thin websocket adapter
(:mod:`.service`).

Protocol reference: docs/teleconsultation.md.
"""
