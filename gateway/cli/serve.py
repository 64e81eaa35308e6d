"""`tlsgate serve`: options to configuration, the admin API's security checks, and the run.

I/O edge. Trio and the server are imported only here, so the other commands start fast.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

from gateway.cli.env import ENV_ERRORS
from gateway.cli.files import admit_files
from gateway.dataplane.plane import SWITCH_INTERVAL
from gateway.dataplane.sockets import is_loopback
from gateway.logs import setup_logging

#: Allocations between two young-generation collections (CPython's default is 700).
GC_YOUNG_THRESHOLD = 10_000


def _admin_token(args: argparse.Namespace) -> str | None:
    """--admin-token-file wins over TLSGATE_ADMIN_TOKEN (API.md "Security")."""
    if args.admin_token_file:
        with open(args.admin_token_file, encoding="utf-8") as handle:
            token = handle.read().strip()
        if not token:
            raise ValueError(f"{args.admin_token_file} is empty")
        return token
    return os.environ.get("TLSGATE_ADMIN_TOKEN") or None


def run_serve(args: argparse.Namespace) -> int:
    import trio

    from admin.listen import AdminLimits
    from gateway.dataplane.proxy import ProxyConfig
    from gateway.server import ServeConfig, StartError, serve
    from gateway.store.etcd import EtcdTLS
    from gateway.store.location import LocationError, parse_location
    from gateway.store.sqlite import StoreError, StoreUnavailable

    if ENV_ERRORS:
        for message in ENV_ERRORS:
            print(f"error: {message}", file=sys.stderr)
        return 2
    setup_logging(args.log_level, args.log_format)
    try:
        token = _admin_token(args)
    except (OSError, ValueError) as exc:
        print(f"error: admin token: {exc}", file=sys.stderr)
        return 2
    refusal = _admin_refusal(args, token)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    # All or nothing: a typo must stop the start rather than leave a partial configuration
    # running. Metadata is assigned when they are applied, as for any write.
    documents, problems = admit_files(args.bootstrap)
    if problems:
        for problem in problems:
            print(f"error: {problem.where}: {problem.message}", file=sys.stderr)
        return 2
    etcd_tls = None
    if args.etcd_cacert or args.etcd_cert or args.etcd_key:
        etcd_tls = EtcdTLS(args.etcd_cacert or None, args.etcd_cert or None, args.etcd_key or None)
    if args.store:
        try:
            parse_location(args.store)
        except LocationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.replica_lease < 1:
        print("error: --replica-lease must be at least 1 second", file=sys.stderr)
        return 2
    proxy = ProxyConfig(
        hello_timeout=args.hello_timeout,
        connect_timeout=args.connect_timeout,
        idle_timeout=args.idle_timeout,
        session_tickets=args.tls_session_tickets,
        **({"splice": False} if args.no_splice else {}),
    )
    config = ServeConfig(
        bootstrap=tuple(args.bootstrap),
        bind_address=args.bind_address,
        drain_timeout=args.drain_timeout,
        proxy=proxy,
        max_connections=args.max_connections,
        admin=args.admin,
        admin_token=token,
        admin_tls_cert=args.admin_tls_cert or None,
        admin_tls_key=args.admin_tls_key or None,
        admin_client_ca=args.admin_client_ca or None,
        admin_limits=AdminLimits(max_connections=max(1, args.admin_max_connections)),
        body_limit=args.body_limit,
        state_dir=args.state_dir or None,
        store_url=args.store or None,
        etcd_tls=etcd_tls,
        replica_name=args.replica_name or None,
        replica_lease=args.replica_lease,
        workers=args.workers,
        bulk_start=True,
        log_level=args.log_level,
        log_format=args.log_format,
    )
    # A configuration of 10,000 routes is millions of long-lived objects: with the default
    # thresholds the collector spends ~30 % of every rebuild walking them (measured with
    # scripts/bench-control). Young collections of 10,000 objects still take well under 1 ms.
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)
    if config.workers == 0:
        # One process moves the bytes and builds configurations (on threads): hand the GIL
        # to the event loop every 0.2 ms rather than 5, or a connection that arrives during
        # a bundle apply waits ~5 ms at each step of its handshake (scripts/bench-control).
        sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        trio.run(serve, config, documents)
    except (StartError, StoreError, StoreUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _admin_refusal(args: argparse.Namespace, token: str | None) -> str | None:
    """Why the admin API must not start as configured (API.md "Security"), or None."""
    if args.admin_client_ca and not (args.admin_tls_cert and args.admin_tls_key):
        return (
            "--admin-client-ca needs --admin-tls-cert and --admin-tls-key: client "
            "certificates are asked for only over HTTPS"
        )
    if args.admin is None or is_loopback(args.admin[0]):
        return None
    host = args.admin[0]
    if token is None:
        return (
            f"refusing to serve the admin API on {host} without a token: set "
            "--admin-token-file or TLSGATE_ADMIN_TOKEN, or bind it to a loopback address"
        )
    if not (args.admin_tls_cert or args.admin_tls_key) and not args.admin_plaintext:
        return (
            f"refusing to serve the admin API on {host} in plain HTTP: the token would cross "
            "the network in clear text. Give --admin-tls-cert and --admin-tls-key, or "
            "--admin-plaintext if TLS is ended in front of tlsgate"
        )
    return None
