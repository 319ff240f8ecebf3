"""maas.host: every read or write of this host that the CLI, the agent and the gateway share.

The Docker engine (`engine`), the hardware probe (`probe`, `gpuroom`), model metadata, hubs,
downloads and the model cache (`models`), git (`gitrepo`), node secrets, host paths and ports,
process settings, systemd notify, task supervision and the agent's socket location. The only
package that imports docker, psutil, pynvml or subprocess (an import-linter contract).
"""
