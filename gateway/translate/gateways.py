"""GatewayClasses and Gateways: which are ours, and their gateway-level checks (SPEC.md §2,
§3.1, §4.1).

Pure. A GatewayClass is ours when its controllerName is tlsgate's; a Gateway is ours when its
class is. Per Gateway: its addresses, infrastructure parameters, the backend client
certificate, the frontend validation mode, and each listener's own checks (`listeners.py`).
"""

from __future__ import annotations

import ipaddress

from gateway import CONTROLLER_NAME
from gateway.api import model
from gateway.api.kinds import ObjectKey
from gateway.api.names import FrontendValidationMode, NamespacedName
from gateway.api.status import (
    ConditionType,
    Draft,
    GatewayClassStatus,
    Reason,
    SupportedFeature,
    resolved_refs,
    stamp,
)
from gateway.translate.context import Build, GatewayState
from gateway.translate.facts import Facts
from gateway.translate.listeners import evaluate_listener
from gateway.translate.references import Fault, check_reference
from gateway.translate.resources import Resources

#: SPEC.md §13, sorted as the spec asks for `status.supportedFeatures`.
SUPPORTED_FEATURES = (
    "Gateway",
    "ReferenceGrant",
    "TLSRoute",
    "TLSRouteModeMixed",
    "TLSRouteModeTerminate",
)


def process_gateway_classes(build: Build) -> None:
    """Accept the GatewayClasses of our controller, and write their status (SPEC.md §2)."""
    for name, gwc in build.resources.gateway_classes.items():
        if gwc.spec.controller_name != CONTROLLER_NAME:
            continue  # another controller's class: not ours to write (§2)
        if gwc.spec.parameters_ref is not None:
            ref = gwc.spec.parameters_ref
            accepted = Draft(
                ConditionType.ACCEPTED,
                False,
                Reason.INVALID_PARAMETERS,
                f"parametersRef {ref.group}/{ref.kind} {ref.name!r} is not supported by tlsgate",
            )
        else:
            accepted = Draft(
                ConditionType.ACCEPTED, True, Reason.ACCEPTED, "GatewayClass is accepted by tlsgate"
            )
        build.our_classes[name] = accepted.status
        key = ObjectKey("GatewayClass", "", name)
        old = build.previous(key)
        build.statuses[key] = GatewayClassStatus(
            conditions=stamp(
                [accepted],
                gwc.metadata.generation or 1,
                build.facts.now,
                old.conditions if isinstance(old, GatewayClassStatus) else (),
            ),
            supported_features=tuple(SupportedFeature(name=f) for f in SUPPORTED_FEATURES),
        )


def process_gateways(build: Build) -> None:
    """Evaluate every Gateway of an accepted class of ours (SPEC.md §3, §9.1)."""
    for key, gateway in build.resources.gateways.items():
        if build.our_classes.get(gateway.spec.gateway_class_name):
            build.gateways[key] = evaluate_gateway(key, gateway, build.resources, build.facts)


def evaluate_gateway(
    key: NamespacedName, doc: model.Gateway, resources: Resources, facts: Facts
) -> GatewayState:
    addresses, refusal = _addresses(doc, facts)
    infra = doc.spec.infrastructure
    if refusal is None and infra is not None and infra.parameters_ref is not None:
        ref = infra.parameters_ref
        refusal = Draft(
            ConditionType.ACCEPTED,
            False,
            Reason.INVALID_PARAMETERS,
            f"infrastructure.parametersRef {ref.group}/{ref.kind} {ref.name!r} is "
            "not supported by tlsgate",
        )
    state = GatewayState(
        key=key,
        doc=doc,
        addresses=addresses,
        refusal=refusal,
        listeners=[
            evaluate_listener(key, doc, lst, resources, facts) for lst in doc.spec.listeners
        ],
    )
    tls = doc.spec.tls
    if tls is not None and tls.backend is not None and tls.backend.client_certificate_ref:
        client_ref = tls.backend.client_certificate_ref
        state.client_certificate = _client_certificate(key, client_ref, resources, facts)
        if state.client_certificate.status:
            state.client_certificate_ref = NamespacedName(
                client_ref.namespace or key.namespace, client_ref.name
            )
    if tls is not None and tls.frontend is not None:
        configs = [tls.frontend.default, *(p.tls for p in tls.frontend.per_port or ())]
        state.insecure_frontend = any(
            c.validation is not None
            and c.validation.mode == FrontendValidationMode.ALLOW_INSECURE_FALLBACK
            for c in configs
        )
    return state


def _addresses(doc: model.Gateway, facts: Facts) -> tuple[tuple[str, ...], Draft | None]:
    """Static IPAddress values are bound as given (SPEC.md §3.1 addresses, Extended)."""
    out: list[str] = []
    for address in doc.spec.addresses or ():
        if address.type != "IPAddress":
            return (), Draft(
                ConditionType.ACCEPTED,
                False,
                Reason.UNSUPPORTED_ADDRESS,
                f"address type {address.type!r} is not supported; only IPAddress is",
            )
        if not address.value:
            continue  # an empty value asks us to assign one: the default bind address
        out.append(str(ipaddress.ip_address(address.value)))
    return tuple(dict.fromkeys(out or [facts.bind_address])), None


def _client_certificate(
    gateway: NamespacedName,
    ref: model.SecretObjectReference,
    resources: Resources,
    facts: Facts,
) -> Draft:
    checked = check_reference(
        resources,
        facts,
        ref,
        from_kind="Gateway",
        from_namespace=gateway.namespace,
        target="Secret",
    )
    if checked.fault is None:
        return resolved_refs([])
    reason = (
        Reason.REF_NOT_PERMITTED
        if checked.fault is Fault.NOT_PERMITTED
        else Reason.INVALID_CLIENT_CERTIFICATE_REF
    )
    return resolved_refs([(reason, f"tls.backend.clientCertificateRef: {checked.message}")])
