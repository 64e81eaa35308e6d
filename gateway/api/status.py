"""Status values: conditions and the status blocks of GatewayClass, Gateway and TLSRoute.

Pure. Condition types and reasons are the spec's strings verbatim (SPEC.md §2, §4, §5.3), held in
StrEnums so a typo is a NameError rather than a silently wrong status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from attrs import frozen

from gateway.api.model import ParentReference, RouteGroupKind


class ConditionType(StrEnum):
    ACCEPTED = "Accepted"
    PROGRAMMED = "Programmed"
    RESOLVED_REFS = "ResolvedRefs"
    CONFLICTED = "Conflicted"
    INSECURE_FRONTEND_VALIDATION_MODE = "InsecureFrontendValidationMode"


class Reason(StrEnum):
    # shared
    ACCEPTED = "Accepted"
    PROGRAMMED = "Programmed"
    RESOLVED_REFS = "ResolvedRefs"
    INVALID = "Invalid"
    PENDING = "Pending"
    INVALID_PARAMETERS = "InvalidParameters"
    REF_NOT_PERMITTED = "RefNotPermitted"
    # Gateway (SPEC.md §4.1)
    LISTENERS_NOT_VALID = "ListenersNotValid"
    UNSUPPORTED_ADDRESS = "UnsupportedAddress"
    INVALID_CLIENT_CERTIFICATE_REF = "InvalidClientCertificateRef"
    LISTENERS_NOT_RESOLVED = "ListenersNotResolved"
    CONFIGURATION_CHANGED = "ConfigurationChanged"
    # Listener (SPEC.md §4.2)
    PORT_UNAVAILABLE = "PortUnavailable"
    UNSUPPORTED_PROTOCOL = "UnsupportedProtocol"
    NO_VALID_CA_CERTIFICATE = "NoValidCACertificate"
    UNSUPPORTED_VALUE = "UnsupportedValue"
    PROTOCOL_CONFLICT = "ProtocolConflict"
    HOSTNAME_CONFLICT = "HostnameConflict"
    NO_CONFLICTS = "NoConflicts"
    INVALID_CERTIFICATE_REF = "InvalidCertificateRef"
    INVALID_ROUTE_KINDS = "InvalidRouteKinds"
    INVALID_CA_CERTIFICATE_REF = "InvalidCACertificateRef"
    INVALID_CA_CERTIFICATE_KIND = "InvalidCACertificateKind"
    # Route (SPEC.md §5.3)
    NOT_ALLOWED_BY_LISTENERS = "NotAllowedByListeners"
    NO_MATCHING_LISTENER_HOSTNAME = "NoMatchingListenerHostname"
    NO_MATCHING_PARENT = "NoMatchingParent"
    INVALID_KIND = "InvalidKind"
    BACKEND_NOT_FOUND = "BackendNotFound"
    # BackendTLSPolicy (SPEC.md §7)
    CONFLICTED = "Conflicted"
    # ClientTrafficPolicy (API.md "Traffic policies", GEP-713)
    TARGET_NOT_FOUND = "TargetNotFound"


@frozen(kw_only=True)
class Condition:
    type: str
    status: str
    observed_generation: int
    last_transition_time: str
    reason: str
    message: str


@frozen(kw_only=True)
class SupportedFeature:
    name: str


@frozen(kw_only=True)
class GatewayClassStatus:
    conditions: tuple[Condition, ...]
    supported_features: tuple[SupportedFeature, ...]


@frozen(kw_only=True)
class GatewayStatusAddress:
    type: str
    value: str


@frozen(kw_only=True)
class ListenerStatus:
    name: str
    supported_kinds: tuple[RouteGroupKind, ...]
    attached_routes: int
    conditions: tuple[Condition, ...]


@frozen(kw_only=True)
class GatewayStatus:
    addresses: tuple[GatewayStatusAddress, ...]
    conditions: tuple[Condition, ...]
    listeners: tuple[ListenerStatus, ...]


@frozen(kw_only=True)
class RouteParentStatus:
    parent_ref: ParentReference
    controller_name: str
    conditions: tuple[Condition, ...]


@frozen(kw_only=True)
class RouteStatus:
    parents: tuple[RouteParentStatus, ...]


@frozen(kw_only=True)
class PolicyAncestorStatus:
    ancestor_ref: ParentReference
    controller_name: str
    conditions: tuple[Condition, ...]


@frozen(kw_only=True)
class PolicyStatus:
    ancestors: tuple[PolicyAncestorStatus, ...]


Status = GatewayClassStatus | GatewayStatus | RouteStatus | PolicyStatus


@frozen
class Draft:
    """A condition before it is stamped with a generation and a transition time."""

    type: ConditionType
    status: bool
    reason: Reason
    message: str


def stamp(
    drafts: Sequence[Draft], generation: int, now: str, previous: Sequence[Condition] = ()
) -> tuple[Condition, ...]:
    """Finish conditions for an object of `generation` (SPEC.md §12).

    `lastTransitionTime` moves only when a condition's status changes; reason, message and
    observedGeneration are rewritten on every build.
    """
    out = []
    for draft in drafts:
        status = "True" if draft.status else "False"
        old = next((c for c in previous if c.type == draft.type), None)  # a handful at most
        if (
            old is not None
            and old.status == status
            and old.observed_generation == generation
            and old.reason == draft.reason
            and old.message == draft.message
        ):
            out.append(old)  # unchanged: the same value (and the same object, kept cheaply)
            continue
        since = old.last_transition_time if old is not None and old.status == status else now
        out.append(
            Condition(
                type=str(draft.type),
                status=status,
                observed_generation=generation,
                last_transition_time=since,
                reason=str(draft.reason),
                message=draft.message,
            )
        )
    return tuple(out)


def accepted_count(status: Status) -> tuple[int, int]:
    """(accepted, not accepted) Accepted conditions of one status, route parents and policy
    ancestors included."""
    if isinstance(status, RouteStatus):
        groups = [p.conditions for p in status.parents]
    elif isinstance(status, PolicyStatus):
        groups = [a.conditions for a in status.ancestors]
    else:
        groups = [status.conditions]
    accepted = rejected = 0
    for conditions in groups:
        for condition in conditions:
            if condition.type == ConditionType.ACCEPTED:
                if condition.status == "True":
                    accepted += 1
                else:
                    rejected += 1
    return accepted, rejected


def accepted_counts(statuses: Mapping[Any, Status]) -> tuple[int, int]:
    """`accepted_count` summed over every object: the one-line summary logged at each swap."""
    accepted = rejected = 0
    for status in statuses.values():
        yes, no = accepted_count(status)
        accepted, rejected = accepted + yes, rejected + no
    return accepted, rejected


def resolved_refs(problems: Sequence[tuple[Reason, str]]) -> Draft:
    """ResolvedRefs from the problems found, in check order: the first one's reason, every
    message (SPEC.md §8 step 5)."""
    if not problems:
        return Draft(
            ConditionType.RESOLVED_REFS, True, Reason.RESOLVED_REFS, "All references are resolved"
        )
    return Draft(
        ConditionType.RESOLVED_REFS,
        False,
        problems[0][0],
        "; ".join(message for _, message in problems),
    )
