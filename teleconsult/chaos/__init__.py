"""``tbib chaos``: real engines, real processes, a seeded schedule of faults, and an exactly-once verdict."""
