"""Anycast through ExaBGP: which prefixes each PoP should announce (pure), and a BIRD + ExaBGP lab on
loopback for tests and the demo. The agent beside each PoP's ExaBGP is steering.agents.exabgp."""
