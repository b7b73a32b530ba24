"""``tbib demo``: the whole system on one machine with simulated patients (services, server, ingest, gateways)."""
