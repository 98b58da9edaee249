"""Read models: the queries behind what the product shows and serves. They write nothing
(ARCHITECTURE.md §1, §2): entry points and services call them; they import models, pure modules
and Redis (steering.redisconn), never services.

Read models that live elsewhere, in the same layer: steering.representation (an object's plain-dict
form), steering.topology (the live map's snapshot), steering.dataplane.status (desired vs applied)
and steering.dataplane.desired (what each agent is to run).
"""
