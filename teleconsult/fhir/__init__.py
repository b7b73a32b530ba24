"""FHIR R4 interface of tbib (issue 17; docs/fhir.md).

Pure mapping (no I/O): :mod:`.terminology` (code systems, metric <-> coding), :mod:`.observation` (readings <->
``Observation``, blood pressure panels), :mod:`.resources` (``Patient``, ``Device``, ``Flag``, ``OperationOutcome``),
:mod:`.audit_event` (audit rows -> ``AuditEvent``), :mod:`.bundle`, :mod:`.capability`, :mod:`.search` (search
parameters, paging cursors). Adapters: :mod:`.store` (queries), :mod:`.transaction` (import bundles -> readings through
the ingest writer) and :mod:`.api` (the router mounted at ``/fhir/r4`` by ``teleconsult/api/extensions/fhir.py``).
"""
