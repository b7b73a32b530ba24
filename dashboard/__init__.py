"""tbib dashboard package."""
