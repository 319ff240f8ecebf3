"""maas-gateway: one OpenAI-compatible endpoint per node, routing by model name to ready replicas.

A sibling process of the agent: it reads routes from the agent's status API (unix socket) and never
talks to Docker. Pure routing in `routing`, request inspection in `requests`, the listening
socket and its protocol-level relay of model requests in `front` (pooled replica connections in
`upstream`), the shared state and policy and
the aiohttp application for everything else in `app` (its relay in `forward`), the process in
`main`.
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
