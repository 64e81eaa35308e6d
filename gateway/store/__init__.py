"""The configuration side of the process: what a write does (plan, metadata, pure), the
durable store (SQLite), the one owner of mutable state, and the write path that joins them.
"""
