"""The build: documents and runtime facts in, every status and the routing table out.

Pure and deterministic (enforced by ruff's banned-api rule over this folder). `translate` in
`build` is the entry point and lists every step in order; each step has its own module.
"""

from gateway.translate.build import translate

__all__ = ["translate"]
