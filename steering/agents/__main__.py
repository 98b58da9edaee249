"""`python -m steering.agents <agent> ...`: the same as the `steering-agent` command."""

from steering.agents.cli import main

raise SystemExit(main())
