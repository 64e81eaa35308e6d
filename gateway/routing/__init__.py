"""The compiled routing snapshot, hostname matching, the per-connection lookup and `explain`.

Pure (enforced by ruff's banned-api rule over this folder): the data plane reads a snapshot,
the control plane builds one.
"""
