"""tlsgate: a Gateway API TLSRoute gateway on Trio, outside Kubernetes."""

CONTROLLER_NAME = "tlsgate.dev/gateway-controller"
GATEWAY_GROUP = "gateway.networking.k8s.io"
#: The group of tlsgate's own kinds (API.md "Traffic policies").
POLICY_GROUP = "gateway.tlsgate.dev"


def tlsgate_version() -> str:
    """The installed distribution's version (`pip install -e .`), or the source's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tlsgate")
    except PackageNotFoundError:
        return "0.1.0"
