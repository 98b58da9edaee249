"""The only writers of state (ARCHITECTURE.md §1, §2).

Each `do_<verb>()` runs in one transaction: lock the rows, check guards, mutate, write the
Change rows, then (after commit) publish a live delta. Views, consumers, tasks and commands
call these functions and nothing else writes state.
"""
