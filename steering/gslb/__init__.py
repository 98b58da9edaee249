"""GSLB: the DNS layer. PowerDNS asks our remote-backend endpoint; the answer policy is pure.

- policy.py    the answer policy (weighted, geo by client network/ECS, failover) over plain data
- snapshot.py  the policy's inputs from the DB: the DNS layer's desired state (the only module
               here that uses the ORM; it runs in the control plane, never on a DNS host)
- app.py       the raw ASGI app speaking the PowerDNS remote-backend protocol (post_json)
- server.py    uvicorn for that app; the process is steering.agents.gslb (`steering-agent gslb`),
               which follows the agent contract with a DNS agent token: no DB, no Redis, no Django
- counters.py  answers per service and region, reported by the agent, kept in Redis; read by
               /api/v1/dns/answers/
- pdnsconf.py  renders deploy/pdns/pdns.conf for the demo, the tests and the benchmark
- demo.py      what `runstack` starts for DNS (gslb server + pdns_server on loopback)
"""
