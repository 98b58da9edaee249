"""The probe engine (DESIGN §4.2): checks (asyncio), the rise/fall state machine, panic, and
the Redis-side schedule and counters. Nothing here imports Django; services and tasks wire it."""
