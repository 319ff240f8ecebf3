"""maas.agent: the node agent (`maas-agent`): desired state, reconcile, its API, the daemon."""
