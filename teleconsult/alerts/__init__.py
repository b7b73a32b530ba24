"""Alerts: NEWS2, the pure rule engine, its store, the asyncio adapter and websocket push."""
