"""BackendTLSPolicy: which backend Services are re-encrypted, and each policy's conditions
(SPEC.md §7, §10.7).

Pure. A policy targets core Services (optionally one port, by name). Its CA references must be
ConfigMaps in its own namespace with a loadable `ca.crt`; when none is usable the policy is not
accepted (`NoValidCACertificate`), so traffic never goes out unverified. When two policies
target the same Service port, the older wins, then namespace/name; the others are
`Conflicted`.
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import frozen

from gateway.api import model
from gateway.api.names import NamespacedName
from gateway.api.status import ConditionType, Draft, Reason, resolved_refs
from gateway.routing.snapshot import BackendTLS
from gateway.translate.facts import Facts
from gateway.translate.references import Fault, ca_bundle_of, check_reference
from gateway.translate.resources import Resources

#: (namespace, Service name, Service port name or None for every port)
Target = tuple[str, str, str | None]


@frozen
class PolicyResult:
    accepted: Draft
    resolved_refs: Draft
    targets: tuple[Target, ...]


def evaluate_policies(
    resources: Resources, facts: Facts
) -> tuple[dict[Target, BackendTLS], dict[NamespacedName, PolicyResult]]:
    results: dict[NamespacedName, PolicyResult] = {}
    candidates: dict[Target, list[tuple[tuple[str, str, str], NamespacedName, BackendTLS]]] = {}
    for key, policy in resources.backend_tls_policies.items():
        result, tls = _evaluate(key, policy, resources, facts)
        results[key] = result
        if tls is None:
            continue
        age = (policy.metadata.creation_timestamp or "", key.namespace, key.name)
        for target in result.targets:
            candidates.setdefault(target, []).append((age, key, tls))
    chosen: dict[Target, BackendTLS] = {}
    for target, entries in candidates.items():
        entries.sort(key=lambda entry: entry[0])
        chosen[target] = entries[0][2]
        for _, loser, _ in entries[1:]:
            winner = entries[0][1]
            results[loser] = PolicyResult(
                Draft(
                    ConditionType.ACCEPTED,
                    False,
                    Reason.CONFLICTED,
                    f"Service {NamespacedName(target[0], target[1])} is already targeted by the "
                    f"older BackendTLSPolicy {winner}",
                ),
                results[loser].resolved_refs,
                results[loser].targets,
            )
    return chosen, results


def _evaluate(
    key: NamespacedName, policy: model.BackendTLSPolicy, resources: Resources, facts: Facts
) -> tuple[PolicyResult, BackendTLS | None]:
    namespace = key.namespace
    targets = []
    invalid_targets = []
    for i, ref in enumerate(policy.spec.target_refs):
        if (ref.group, ref.kind) == ("", "Service"):
            targets.append((namespace, ref.name, ref.section_name))
        else:
            invalid_targets.append(f"targetRefs[{i}]: {ref.group or 'core'}/{ref.kind}")
    validation = policy.spec.validation
    problems: list[tuple[Reason, str]] = []
    usable: list[NamespacedName] = []
    for i, ca_ref in enumerate(validation.ca_certificate_refs or ()):
        # LocalObjectReferences: the policy's own namespace, so no grant is involved.
        checked = check_reference(
            resources,
            facts,
            ca_ref,
            from_kind="BackendTLSPolicy",
            from_namespace=namespace,
            target="ConfigMap",
        )
        if checked.fault is None:
            usable.append(checked.key)
        else:
            reason = (
                Reason.INVALID_KIND
                if checked.fault is Fault.WRONG_KIND
                else Reason.INVALID_CA_CERTIFICATE_REF
            )
            problems.append((reason, f"caCertificateRefs[{i}]: {checked.message}"))
    resolved = resolved_refs(problems)
    if invalid_targets:
        accepted = Draft(
            ConditionType.ACCEPTED,
            False,
            Reason.INVALID,
            "only core Services can be targeted: " + ", ".join(invalid_targets),
        )
        return PolicyResult(accepted, resolved, tuple(targets)), None
    if validation.ca_certificate_refs and not usable:
        accepted = Draft(
            ConditionType.ACCEPTED,
            False,
            Reason.NO_VALID_CA_CERTIFICATE,
            "no caCertificateRef is usable: connections to its Services are refused rather "
            "than sent unverified or in plain text",
        )
        refused = BackendTLS(policy=str(key), hostname=validation.hostname, error=accepted.message)
        return PolicyResult(accepted, resolved, tuple(targets)), refused
    accepted = Draft(ConditionType.ACCEPTED, True, Reason.ACCEPTED, "Policy is accepted")
    tls = BackendTLS(
        policy=str(key),
        hostname=validation.hostname,
        ca_config_maps=tuple(usable),
        ca_bundle=ca_bundle_of(resources, tuple(usable)),
        well_known=validation.well_known_ca_certificates,
        subject_alt_names=tuple(
            (san.type, san.hostname or san.uri or "") for san in validation.subject_alt_names or ()
        ),
    )
    return PolicyResult(accepted, resolved, tuple(targets)), tls


def policy_for(
    policies: Mapping[Target, BackendTLS], namespace: str, service: str, port_name: str | None
) -> BackendTLS | None:
    """A policy for this port by name wins over one for the whole Service."""
    if port_name is not None and (namespace, service, port_name) in policies:
        return policies[(namespace, service, port_name)]
    return policies.get((namespace, service, None))
