"""Admission: the schema and CEL rules Kubernetes would enforce before storing a document.

Pure. `admit(doc)` runs after defaulting and returns one `Cause` per violation, each naming the
field by its wire path and the bad value in its message (API.md "Errors"). The rules are those of
SPEC.md §1 (scalar types), §3.1-§3.3 (Gateway), §5.1 (TLSRoute), §6 (ReferenceGrant) and §7
(BackendTLSPolicy) in `admission_gateway`, plus the core-kind checks the Kubernetes API server
makes in `admission_core`; the shared machinery is `admission_checks`.
"""

from __future__ import annotations

from gateway.api import corev1, model
from gateway.api.admission_checks import Cause, Checker, metadata, show_value
from gateway.api.admission_core import (
    admit_endpoint_slice,
    admit_secret,
    admit_service,
    data_keys,
)
from gateway.api.admission_gateway import (
    admit_backend_tls_policy,
    admit_gateway,
    admit_gateway_class,
    admit_reference_grant,
    admit_tls_route,
)
from gateway.api.admission_traffic import (
    admit_backend_traffic_policy,
    admit_client_traffic_policy,
)
from gateway.api.traffic import BackendTrafficPolicy, ClientTrafficPolicy

__all__ = ["Cause", "admit", "show_value"]


def admit(doc: object) -> list[Cause]:
    """Every admission rule violated by a structured, defaulted document."""
    c = Checker()
    meta = getattr(doc, "metadata", None)
    if isinstance(meta, model.ObjectMeta):
        metadata(c, meta, label_name=isinstance(doc, corev1.Namespace))
    match doc:
        case model.GatewayClass():
            admit_gateway_class(c, doc)
        case model.Gateway():
            admit_gateway(c, doc)
        case model.TLSRoute():
            admit_tls_route(c, doc)
        case model.ReferenceGrant():
            admit_reference_grant(c, doc)
        case model.BackendTLSPolicy():
            admit_backend_tls_policy(c, doc)
        case ClientTrafficPolicy():
            admit_client_traffic_policy(c, doc)
        case BackendTrafficPolicy():
            admit_backend_traffic_policy(c, doc)
        case corev1.Service():
            admit_service(c, doc)
        case corev1.EndpointSlice():
            admit_endpoint_slice(c, doc)
        case corev1.Secret():
            admit_secret(c, doc)
        case corev1.ConfigMap():
            data_keys(c, "data", doc.data)
    return c.causes
