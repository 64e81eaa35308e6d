"""The admin HTTP API (Quart-Trio on Hypercorn, in the gateway's Trio process): API.md."""
