"""What runs on a PoP host beside its data plane: the HAProxy agent, the GSLB server for
PowerDNS and the ExaBGP agent. They talk only to the control plane's public HTTP API (the agent
contract: steering.agents.contract) with a scoped agent token, and import neither Django nor a
database or Redis client, so a PoP host holds no credential but its own token.
"""
