"""The `tlsgate` command: argument parsing, `serve`, offline `translate`, and the admin API
client behind `apply`, `get`, `delete` and `explain`.
"""
