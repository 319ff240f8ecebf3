"""maas-gateway: one OpenAI-compatible endpoint per node, routing by model name to ready replicas.

A sibling process of the agent: it reads routes from the agent's status API (unix socket) and never
talks to Docker. Pure decisions in `admission` (refuse / delegate / serve) and `routing` (which
replica), request inspection in `requests`, the listening socket in `front` (HTTP/1.1 framing in
`http1`, its protocol-level relay in `relay`, pooled replica connections in `upstream`), one
header policy for both relays in `headers`, the shared state and policy and the aiohttp
application for everything else in `app` (its relay in `forward`), errors in `errors`, the
process in `main`.
"""

from maas.gateway.app import Gateway
from maas.gateway.config import GatewayConfig
from maas.gateway.keys import KeyRing
from maas.gateway.routing import Balancer, RouteTable, route_table_from_status
from maas.gateway.source import AgentRouteSource, StaticRouteSource

__all__ = [
    "AgentRouteSource",
    "Balancer",
    "Gateway",
    "GatewayConfig",
    "KeyRing",
    "RouteTable",
    "StaticRouteSource",
    "route_table_from_status",
]
