"""GSLB: the DNS layer. PowerDNS asks our remote-backend endpoint; the answer policy is pure.

- policy.py    the answer policy (weighted, geo by client network/ECS, failover) over plain data
- snapshot.py  builds the policy's Snapshot from the DB (the only module here that uses the ORM)
- app.py       the raw ASGI app speaking the PowerDNS remote-backend protocol (post_json)
- server.py    the lean process: uvicorn + background refresh, heartbeat and counters
- counters.py  answers per service and region, flushed to Redis; read by /api/v1/dns/answers/
- pdnsconf.py  renders deploy/pdns/pdns.conf for the demo, the tests and the benchmark
- demo.py      what `runstack` starts for DNS (gslb server + pdns_server on loopback)
"""
