"""Hostname matching and intersection (SPEC.md §8.1, §10.1-§10.2, §14.5).

Pure. A wildcard `*.x` matches a name with one *or more* labels in front of `.x`, for routing:
conformance routes SNI `other.example.com` to a route for `*.com` (SPEC.md §14.5). Certificate
matching (one label, RFC 2818) is a different rule and lives with the certificates.
"""

from __future__ import annotations

import functools


def normalize_sni(server_name: str) -> str:
    """SNI is compared case-insensitively, without a trailing dot (SPEC.md §10.1 step 2)."""
    return server_name.lower().removesuffix(".")


def matches(pattern: str | None, name: str) -> bool:
    """Does a listener or route hostname (`None`: any) match the precise `name`?"""
    if pattern is None:
        return True
    if pattern.startswith("*."):
        return name.endswith(pattern[1:]) and len(name) > len(pattern) - 1
    return pattern == name


@functools.lru_cache(maxsize=65536)
def intersect(listener: str | None, route: str) -> str | None:
    """The effective hostname of a listener and a route hostname, or None (SPEC.md §8.1)."""
    if listener is None:
        return route
    listener_wild, route_wild = listener.startswith("*."), route.startswith("*.")
    if not listener_wild and not route_wild:
        return listener if listener == route else None
    if listener_wild and not route_wild:
        return route if matches(listener, route) else None
    if route_wild and not listener_wild:
        return listener if matches(route, listener) else None
    x, y = listener[2:], route[2:]
    if x == y or x.endswith("." + y):
        return listener
    if y.endswith("." + x):
        return route
    return None


def specificity(hostname: str | None) -> tuple[int, int]:
    """Sort key, most specific first: exact names, then wildcards by longer suffix, then none."""
    if hostname is None:
        return (2, 0)
    if hostname.startswith("*."):
        return (1, -len(hostname))
    return (0, 0)


def wildcard_suffixes(name: str) -> list[str]:
    """The wildcard patterns that could match `name`, most specific first:
    `a.b.c` -> [`*.b.c`, `*.c`]. Lookup walks these instead of scanning every wildcard."""
    labels = name.split(".")
    return ["*." + ".".join(labels[i:]) for i in range(1, len(labels))]
