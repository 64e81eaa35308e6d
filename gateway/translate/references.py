"""ReferenceGrant and reference checks: whether an object may refer to one in another
namespace (SPEC.md §6), and checking a reference to a Secret or a ConfigMap in the order that
never leaks whether a cross-namespace target exists: grant, kind, existence, then whether it
loads (SPEC.md §6 privacy rule, §9.1 step 4).

Pure. The callers map each fault to the reason their condition uses (a listener certificate,
a frontend CA bundle, the Gateway's backend client certificate, a BackendTLSPolicy CA).
"""

from __future__ import annotations

import enum

from attrs import frozen

from gateway import GATEWAY_GROUP
from gateway.api import corev1, model
from gateway.api.names import NamespacedName
from gateway.routing.snapshot import Certificate
from gateway.translate.facts import Facts
from gateway.translate.resources import Resources


def grant_allows(
    resources: Resources,
    *,
    from_group: str,
    from_kind: str,
    from_namespace: str,
    to_group: str,
    to_kind: str,
    to_namespace: str,
    to_name: str,
) -> bool:
    """May an object in `from_namespace` refer to one in `to_namespace` (SPEC.md §6)?

    Same-namespace references need no grant. A grant counts only in the target's
    namespace; `from` and `to` entries are each ORed, and comparisons are exact.
    """
    if from_namespace == to_namespace:
        return True
    for (namespace, _), grant in resources.reference_grants.items():
        if namespace != to_namespace:
            continue
        if not any(
            f.group == from_group and f.kind == from_kind and f.namespace == from_namespace
            for f in grant.spec.from_
        ):
            continue
        if any(
            t.group == to_group and t.kind == to_kind and (not t.name or t.name == to_name)
            for t in grant.spec.to
        ):
            return True
    return False


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


#: The reference types that name a Secret or ConfigMap; a LocalObjectReference has no
#: namespace (the referrer's own).
Reference = model.SecretObjectReference | model.ObjectReference | model.LocalObjectReference


def check_reference(
    resources: Resources,
    facts: Facts,
    ref: Reference,
    *,
    from_kind: str,
    from_namespace: str,
    target: str,
) -> Checked:
    """`target` is "Secret" (a certificate and key) or "ConfigMap" (a `ca.crt` bundle)."""
    group, kind, name = ref.group, ref.kind, ref.name
    namespace = None if isinstance(ref, model.LocalObjectReference) else ref.namespace
    key = NamespacedName(namespace or from_namespace, name)
    if not grant_allows(
        resources,
        from_group=GATEWAY_GROUP,
        from_kind=from_kind,
        from_namespace=from_namespace,
        to_group=group,
        to_kind=kind,
        to_namespace=key.namespace,
        to_name=name,
    ):
        return Checked(
            key,
            Fault.NOT_PERMITTED,
            f"{target} {key} is in another namespace and no ReferenceGrant allows the reference",
        )
    if (group, kind) != ("", target):
        return Checked(
            key,
            Fault.WRONG_KIND,
            f"{group or 'core'}/{kind} is not supported; only core {target}s are",
        )
    if target == "Secret":
        if key not in resources.secrets:
            return Checked(key, Fault.MISSING, f"Secret {key} does not exist")
        loaded, what = facts.secrets.get(key), "is not a valid TLS certificate"
    else:
        config_map = resources.config_maps.get(key)
        if config_map is None or "ca.crt" not in (config_map.data or {}):
            return Checked(key, Fault.MISSING, f"ConfigMap {key} does not exist or has no ca.crt")
        loaded, what = facts.ca_bundles.get(key), "ca.crt is not a valid CA bundle"
    if loaded is None or not loaded.ok:
        why = loaded.message if loaded is not None else "it has not been loaded"
        return Checked(key, Fault.UNLOADABLE, f"{target} {key} {what}: {why}")
    return Checked(key)


def certificate_of(resources: Resources, key: NamespacedName) -> Certificate | None:
    """The PEM chain and key of a Secret a reference resolved to, for the snapshot."""
    secret = resources.secrets.get(key)
    if secret is None:
        return None
    chain, private = corev1.secret_bytes(secret, "tls.crt"), corev1.secret_bytes(secret, "tls.key")
    if not chain or not private:
        return None
    return Certificate(secret=key, chain=chain, key=private)


def ca_bundle_of(resources: Resources, keys: tuple[NamespacedName, ...]) -> str:
    """The `ca.crt` of ConfigMaps references resolved to, concatenated, for the snapshot."""
    parts = []
    for key in keys:
        config_map = resources.config_maps.get(key)
        if config_map is not None:
            parts.append((config_map.data or {}).get("ca.crt", "") + "\n")
    return "".join(parts)
