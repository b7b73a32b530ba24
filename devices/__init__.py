"""tbib devices package."""
