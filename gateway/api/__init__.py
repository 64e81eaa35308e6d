"""The documents: Gateway API and core kinds as frozen values, their status types, the wire
converter, admission, and manifest parsing.

Pure: no I/O, no clock, no logging (enforced by ruff's banned-api rule over this folder).
"""
