"""Anycast through ExaBGP: which prefixes each PoP should announce (pure), the agent beside each
PoP's ExaBGP that announces them and reports what it announced (stdlib only), and a BIRD + ExaBGP
lab on loopback for tests and the demo."""
