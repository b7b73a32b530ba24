"""Simulated patients, Bluetooth LE health devices and a bleak backend over them (see docs/devices-sim.md)."""
