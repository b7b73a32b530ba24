"""MQTT -> PostgreSQL ingest: payload validation (:mod:`.payload`), batch writes (:mod:`.writer`), the worker
(:mod:`.worker`) and its metrics (:mod:`.metrics`)."""
