"""tbib teleconsult package."""
