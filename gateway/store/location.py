"""`--store URL` (API.md "Store and replicas"): where the configuration is kept. Pure.

`sqlite:DIR` is the embedded store in a directory (the default, `sqlite:./tlsgate-state`;
`--state-dir DIR` is its short form). `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]` is an etcd
cluster shared by replicas, `etcds://` the same over TLS; the prefix is the key prefix as
written, leading slash included (`/tlsgate` when the URL has none).
"""

from __future__ import annotations

import attrs

DEFAULT_PREFIX = "/tlsgate"


class LocationError(ValueError):
    """A --store URL that does not parse: one line for the operator."""


@attrs.frozen
class SqliteLocation:
    directory: str


@attrs.frozen
class EtcdLocation:
    #: `http://host:port` (or https) of each member, in the order given.
    endpoints: tuple[str, ...]
    prefix: str = DEFAULT_PREFIX
    tls: bool = False


def parse_location(url: str) -> SqliteLocation | EtcdLocation:
    if url.startswith("sqlite:"):
        directory = url.removeprefix("sqlite:")
        if directory.startswith("//"):  # sqlite:///abs/dir, as SQLAlchemy users write it
            directory = directory[2:]
        if not directory:
            raise LocationError("--store sqlite:DIR needs a directory")
        return SqliteLocation(directory)
    for scheme, tls in (("etcd://", False), ("etcds://", True)):
        if url.startswith(scheme):
            rest = url.removeprefix(scheme)
            members, slash, path = rest.partition("/")
            prefix = "/" + path.rstrip("/") if slash and path.strip("/") else DEFAULT_PREFIX
            endpoints = tuple(
                _endpoint(member, tls, url) for member in members.split(",") if member
            )
            if not endpoints:
                raise LocationError(f"--store {url}: no etcd member given (HOST:PORT)")
            return EtcdLocation(endpoints, prefix, tls)
    raise LocationError(
        f"--store {url!r}: not sqlite:DIR, etcd://HOST:PORT[,HOST:PORT...][/PREFIX] or etcds://..."
    )


def _endpoint(member: str, tls: bool, url: str) -> str:
    host, colon, port = member.rpartition(":")
    if not colon or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise LocationError(f"--store {url}: {member!r} is not HOST:PORT")
    if ":" in host and not host.startswith("["):
        raise LocationError(f"--store {url}: write an IPv6 address in brackets, [{host}]:{port}")
    return f"{'https' if tls else 'http'}://{host}:{port}"
