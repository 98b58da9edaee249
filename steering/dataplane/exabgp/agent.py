"""Moved: the anycast agent is steering.agents.exabgp (the agent contract, a PoP-scoped agent token,
acknowledged versions, fail-static state). This name stays so that an ExaBGP `process` line still
reading `python -m steering.dataplane.exabgp.agent` starts it; it takes the new arguments
(`--pop --api --token-file --state-dir [--instance]`). Standard library only, like the agent.
"""

from __future__ import annotations

import sys

from steering.agents.exabgp import (  # noqa: F401  (the names this module used to define)
    AnycastAgent,
    CommandFailed,
    ExaBGP,
    ExaBGPGone,
    Refused,
    main,
    parse_adj_rib_out,
    parse_neighbor_summary,
)

if __name__ == "__main__":
    sys.exit(main())
