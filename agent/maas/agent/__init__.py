"""maas.agent: every side effect of MaaS-Base (probe, Docker engine, state store, daemon)."""
