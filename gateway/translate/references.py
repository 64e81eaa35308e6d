"""Checking a reference to a Secret or a ConfigMap, in the order that never leaks whether a
cross-namespace target exists: grant, kind, existence, then whether it loads (SPEC.md §6
privacy rule, §9.1 step 4).

Pure. The callers map each fault to the reason their condition uses (a listener certificate,
a frontend CA bundle, the Gateway's backend client certificate, a BackendTLSPolicy CA).
"""

from __future__ import annotations

import enum

from attrs import frozen

from gateway import GATEWAY_GROUP
from gateway.translate.facts import Runtime
from gateway.translate.resources import NamespacedName, Resources


class Fault(enum.Enum):
    NOT_PERMITTED = "not-permitted"
    WRONG_KIND = "wrong-kind"
    MISSING = "missing"
    UNLOADABLE = "unloadable"


@frozen
class Checked:
    key: NamespacedName
    fault: Fault | None = None
    message: str = ""


def check_reference(
    resources: Resources,
    runtime: Runtime,
    *,
    from_kind: str,
    from_namespace: str,
    group: str,
    kind: str,
    namespace: str | None,
    name: str,
    target: str,
) -> Checked:
    """`target` is "Secret" (a certificate and key) or "ConfigMap" (a `ca.crt` bundle)."""
    namespace = namespace or from_namespace
    key = (namespace, name)
    if not resources.grant_allows(
        from_group=GATEWAY_GROUP,
        from_kind=from_kind,
        from_namespace=from_namespace,
        to_group=group,
        to_kind=kind,
        to_namespace=namespace,
        to_name=name,
    ):
        return Checked(
            key,
            Fault.NOT_PERMITTED,
            f"{target} {namespace}/{name} is in another namespace and no "
            "ReferenceGrant allows the reference",
        )
    if (group, kind) != ("", target):
        return Checked(
            key,
            Fault.WRONG_KIND,
            f"{group or 'core'}/{kind} is not supported; only core {target}s are",
        )
    if target == "Secret":
        if key not in resources.secrets:
            return Checked(key, Fault.MISSING, f"Secret {namespace}/{name} does not exist")
        loaded, what = runtime.secrets.get(key), "is not a valid TLS certificate"
    else:
        config_map = resources.config_maps.get(key)
        if config_map is None or "ca.crt" not in (config_map.data or {}):
            return Checked(
                key, Fault.MISSING, f"ConfigMap {namespace}/{name} does not exist or has no ca.crt"
            )
        loaded, what = runtime.ca_bundles.get(key), "ca.crt is not a valid CA bundle"
    if loaded is None or not loaded.ok:
        why = loaded.message if loaded is not None else "it has not been loaded"
        return Checked(key, Fault.UNLOADABLE, f"{target} {namespace}/{name} {what}: {why}")
    return Checked(key)
