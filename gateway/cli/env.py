"""TLSGATE_* environment variables as the defaults of `serve`'s options (API.md "Command
line": every option is also an environment variable).

A value that does not parse is remembered in `ENV_ERRORS` while the parser is built and
reported by `serve`, the only command that reads them, one line naming the variable each.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

#: Problems with TLSGATE_* environment values, found while the parser's defaults were built;
#: reported by `serve` (the only command that reads them), one line each.
ENV_ERRORS: list[str] = []


def env_name(option: str) -> str:
    return "TLSGATE_" + option.upper().replace("-", "_")


def env(name: str, default: str) -> str:
    """Every serve option is also an environment variable TLSGATE_<NAME> (API.md)."""
    return os.environ.get(env_name(name), default)


def env_choice(name: str, default: str, choices: Sequence[str]) -> str:
    """A choice option's default from its environment variable, checked like `_env_number`."""
    text = env(name, default)
    if text not in choices:
        ENV_ERRORS.append(f"{env_name(name)}={text!r} is not one of {', '.join(choices)}")
        return default
    return text


def env_parsed(name: str, default: str, parse: Callable[[str], T]) -> T:
    """An option's default from its environment variable, through the option's own parser;
    a value it refuses is remembered (reported by `serve`) and the default used."""
    try:
        return parse(env(name, default))
    except argparse.ArgumentTypeError as exc:
        ENV_ERRORS.append(f"{env_name(name)}: {exc}")
        return parse(default)


def env_number(name: str, default: str, kind: type[int] | type[float]) -> Any:
    """A numeric option's default from its environment variable; a value that is not a
    number is remembered (reported by `serve`, naming the variable) and the default used."""
    text = env(name, default)
    try:
        value = kind(text)
        if value < 0:
            raise ValueError(text)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        ENV_ERRORS.append(f"{env_name(name)}={text!r} is not {noun} of at least 0")
        return kind(default)
    return value


def admin_address(value: str) -> tuple[str, int] | None:
    """`HOST:PORT` ([v6]:port too); an empty value turns the admin API off."""
    if not value:
        return None
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return host, int(port)


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity mask (not the machine's count), capped by
    its cgroup's CPU quota (a container limited to 2 CPUs on a 64-core host runs 2 workers,
    not 64, as the Go runtime and nginx's `worker_processes auto` patches do)."""
    try:
        cpus = max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cpus = max(1, os.cpu_count() or 1)
    quota = _cgroup_quota()
    return min(cpus, quota) if quota is not None else cpus


def quota_cpus(cpu_max: str) -> int | None:
    """cgroup v2 `cpu.max` ("QUOTA PERIOD", or "max PERIOD" for none) -> whole CPUs, rounded
    up (a quota of 1.5 CPUs can keep two workers busy part of the time)."""
    parts = cpu_max.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, -(-quota // period))


def _cgroup_quota() -> int | None:
    """The CPU quota of this process's cgroup, if it has one: cgroup v2 (`cpu.max`, where
    it is mounted alone or beside v1), else v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`)."""
    memberships = _read("/proc/self/cgroup")
    if memberships is None:
        return None
    lines = [line.split(":", 2) for line in memberships.splitlines()]
    for _, controllers, path in (line for line in lines if len(line) == 3):
        where = path.rstrip("/")
        if controllers == "":  # v2
            for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                text = _read(f"{root}{where}/cpu.max")
                if text is not None:
                    return quota_cpus(text)
        elif "cpu" in controllers.split(","):  # v1
            base = f"/sys/fs/cgroup/{controllers}{where}"
            quota, period = _read(f"{base}/cpu.cfs_quota_us"), _read(f"{base}/cpu.cfs_period_us")
            if quota is not None and period is not None and quota.strip() != "-1":
                return quota_cpus(f"{quota.strip()} {period.strip()}")
    return None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def workers_count(value: str) -> int:
    """`--workers N|auto`: auto is the usable CPUs; 0 is the single-process mode."""
    if value == "auto":
        return usable_cpus()
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of workers or 'auto'")
    return int(value)


def session_tickets(value: str) -> int:
    """`--tls-session-tickets N`: 0 to 16 (a client keeps one or two; more is only bytes)."""
    if not value.isdigit() or int(value) > 16:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of tickets from 0 to 16")
    return int(value)
