"""tbib gateway_agent package."""
