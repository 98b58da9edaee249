"""The only writers of state (ARCHITECTURE.md §1, §2).

Each `do_<verb>()` runs in one transaction: lock the rows, check guards, mutate, write the
Change rows, then (after commit) publish a live delta. Views, consumers, tasks and commands
call these functions and nothing else writes state. Queries that only answer (what is announced
and why, what the data planes report, the audit chain's verdict) are read models
(steering.readmodels, ARCHITECTURE.md §1).
"""
