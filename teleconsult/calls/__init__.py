"""Calls started from the dashboard: signed ``join`` commands to the patient's gateway and its progress events."""
