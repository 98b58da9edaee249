"""Every name the product gives something in Redis, one line each: keys, key patterns, channels.

Standard library only, no Django: config/settings.py, the pure modules (steering.health,
steering.gslb.counters) and so the agents import it too. The strings never change: running
systems have data under them. A pattern's `{field}` is filled with str.format; a prefix is
followed by the rest of the key. The client they are used with is steering.redisconn.sync_client().
"""

from __future__ import annotations

# --- the state version (steering.services.effects; ARCHITECTURE.md §3) ---------------------------
STATE_VERSION = "steering:state_version"                  # STR: the newest committed state version
STATE_VERSION_CHANNEL = "steering:state_version:events"   # PUBSUB: {"v", "pops"} per committed version

# --- the live feed (Channels, on channels-redis) --------------------------------------------------
CHANNEL_LAYER_PREFIX = "steering:asgi"                    # channels-redis' prefix for its channels and groups
LIVE_GROUP = "live"                                       # channel-layer group of every live socket (<prefix>:group:live)
LIVE_CONNS = "steering:live:conns:{user_id}"              # ZSET: a user's open live sockets, scored by expiry
LIVE_DELTAS = "steering:live:deltas"                      # ZSET: the last versions' live deltas (JSON), scored by version

# --- what agents report: measurements, never in the relational DB ---------------------------------
AGENTS_SEEN = "steering:agents:seen"                      # HASH: "<layer>:<scope>:<instance>" -> JSON of the last contact
BACKEND_STATS = "steering:stats:backend:{id}"             # HASH: a backend's live HAProxy figures (steering.dataplane.stats)
HAPROXY_STATUS = "steering:haproxy:agent:{pop}"           # STR: JSON of what a PoP's HAProxy agent last said (expires)
ANYCAST_AGENT = "steering:anycast:agent:{slug}"           # STR: JSON of what a PoP's ExaBGP agent last reported
GSLB_ANSWERS_PREFIX = "steering:gslb:answers:"            # HASH per unix second: "<service id>:<region id>" -> answers
GSLB_HEARTBEAT = "steering:gslb:heartbeat"                # STR: unix time of the GSLB server's last report

# --- the prober's hot state (steering.health.store, steering.health.outbox; ARCHITECTURE.md §4) ---
PROBE_PREFIX = "steering:probe:"                          # every key below starts so (the Lua of store.APPLY_SCRIPT too)
PROBE_DUE = PROBE_PREFIX + "due"                          # ZSET: backend id -> next due time
PROBE_CFG = PROBE_PREFIX + "cfg"                          # HASH: backend id -> ProbeTarget JSON
PROBE_INTERVAL = PROBE_PREFIX + "interval"                # HASH: backend id -> check interval
PROBE_STALE_AT = PROBE_PREFIX + "stale_at"                # ZSET: backend id -> time it is stale without a result
PROBE_SYNCED = PROBE_PREFIX + "synced"                    # STR: "<state version>|<unix time>" of the last schedule rebuild
PROBE_SYNC_LOCK = PROBE_PREFIX + "sync-lock"              # STR: held while one worker rebuilds the schedule
PROBE_SEQ = PROBE_PREFIX + "seq"                          # HASH: backend id -> sequence of its latest transition
PROBE_STATE = PROBE_PREFIX + "state:{id}"                 # STR: a backend's CheckState
PROBE_SAMPLES = PROBE_PREFIX + "samples:{id}"             # LIST: a backend's latest results, newest first
PROBE_POOL = PROBE_PREFIX + "pool:{id}"                   # SET: the backend ids of a pool
PROBE_TRANSITIONS = PROBE_PREFIX + "transitions:stream"   # STREAM: health transitions on their way to the DB
PROBE_TRANSITIONS_GROUP = "recorder"                      # the stream's consumer group (the transition recorder)
PROBE_TRANSITIONS_SCHEDULED = PROBE_PREFIX + "transitions:scheduled"  # STR: set while a recorder task is queued
PROBE_TRANSITIONS_LOCK = PROBE_PREFIX + "transitions:lock"            # STR: held while one drainer records

# --- counters for /metrics (steering.metrics) -----------------------------------------------------
METRICS_PREFIX = "steering:metrics:"                      # every metrics hash starts so
METRICS_PROBES = METRICS_PREFIX + "probes"                # HASH: probes run, by result
METRICS_PROBE_LATENCY = METRICS_PREFIX + "latency"        # HASH: probe latency histogram
METRICS_PROBE_LAG = METRICS_PREFIX + "lag"                # HASH: probe start lag histogram
METRICS_PROBE_GAUGES = METRICS_PREFIX + "gauges"          # HASH: the prober's gauges
METRICS_OUTLIER = METRICS_PREFIX + "outlier"              # HASH: outlier ejection counters and gauges

# --- outlier ejection (steering.services.outliers) ------------------------------------------------
OUTLIER_TRACKS = "steering:outlier:tracks"                # HASH: backend id -> Track JSON
OUTLIER_HELD = "steering:outlier:held"                    # HASH: pool id -> unix time verdicts were last held back
OUTLIER_LOCK = "steering:outlier:lock"                    # STR: held while one worker judges

# --- timers and beat ------------------------------------------------------------------------------
SWEEP_HEARTBEAT = "steering:sweeper:last"                 # STR: unix time the sweeper last ran (check_sweeper)
REDBEAT_PREFIX = "steering:redbeat:"                      # RedBeat's schedule and each entry's last run
REDBEAT_LOCK = "steering:redbeat:lock"                    # STR: held by the one beat that sends (steering.beat)

# --- the Django cache (config/settings.py CACHES): the cache stores `<prefix>:<version>:<key>` ----
CACHE_PREFIX = "steering"                                 # the cache's KEY_PREFIX (keys: steering:1:...)
THROTTLE_PREFIX = "throttle:"                             # every request and sign-in count key starts so (cache key)
THROTTLE = THROTTLE_PREFIX + "%(scope)s:%(ident)s"        # a request count (DRF's cache_format, %-formatted)
SIGNIN_USER = THROTTLE_PREFIX + "login:user:{digest}"     # failed sign-ins of a username (hashed)
SIGNIN_ADDRESS = THROTTLE_PREFIX + "login:ip:{address}"   # failed sign-ins from a client address
SIGNIN_UNTIL_SUFFIX = ":until"                            # after a sign-in count's key: when its window ends
