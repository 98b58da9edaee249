"""`steering-agent <agent> [options]` (also `python -m steering.agents`): the agents that run on
PoP and DNS hosts, one subcommand each.

Each subcommand is a module of this package with a `main(argv) -> int | None`, imported only
when asked for (so a host imports only the agent it runs, and a subcommand whose module is not
in this build says so instead of breaking the others):

    steering-agent gslb     ...   steering.agents.gslb     the GSLB server (PowerDNS remote backend)
    steering-agent haproxy  ...   steering.agents.haproxy  the HAProxy agent
    steering-agent exabgp   ...   steering.agents.exabgp   the ExaBGP agent
"""

from __future__ import annotations

import importlib
import sys

# name -> (module with main(argv), one line of help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "gslb": ("steering.agents.gslb", "the GSLB server: PowerDNS's remote backend for the DNS layer"),
    # --- HAProxy agent: steering.agents.haproxy.main(argv), added with that module. -------------
    "haproxy": ("steering.agents.haproxy", "the HAProxy agent beside a PoP's HAProxy (local layer)"),
    # --- ExaBGP agent: steering.agents.exabgp.main(argv), added with that module. ---------------
    "exabgp": ("steering.agents.exabgp", "the ExaBGP agent, ExaBGP's API process (anycast layer)"),
}


def usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = ["usage: steering-agent <agent> [options]   (steering-agent <agent> --help for its options)", "",
             "agents:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"steering-agent: unknown agent {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name = SUBCOMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise  # the module exists but something it needs is missing: show that error
        print(f"steering-agent: the {name} agent is not in this build ({module_name} is missing)", file=sys.stderr)
        return 2
    result = module.main(rest)
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
