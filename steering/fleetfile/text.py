"""The fleet file as text: YAML (or JSON, which YAML reads too) in, YAML out.

Read with PyYAML's safe loader only (no Python objects), one document per file, and a budget on
the size of what comes out: anchors and aliases are fine for repeated settings, but a small file
whose aliases expand to millions of nodes (or refer to themselves) is refused, not walked.
"""

from __future__ import annotations

from typing import Any

import yaml

from steering.fleetfile.normalise import InvalidFleet

# Nodes (mappings, lists, scalars) a document may expand to: a fleet of 20,000 backends is ~300,000.
MAX_NODES = 2_000_000

HEADER = ("# Steering fleet file: the desired configuration of the whole fleet (docs/fleet-file.md).\n"
          "# Check it: steerctl plan FILE; apply it: steerctl apply FILE --reason WHY.\n")


# libyaml's safe loader when PyYAML was built with it (the wheels are): the same documents, ~10x faster.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _size_ok(document: Any) -> bool:
    stack, seen = [document], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            return False
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return True


def parse(text: str) -> Any:
    """The document a YAML or JSON text holds; InvalidFleet ('/': what and where) if it is not one."""
    try:
        document = yaml.load(text, Loader=_Loader)  # a safe loader: no Python objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise InvalidFleet({"/": [f"Not valid YAML: {where}{exc.problem or exc}"]}) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise InvalidFleet({"/": [f"Not valid YAML: {str(exc)[:200] or type(exc).__name__}"]}) from None
    if not _size_ok(document):
        raise InvalidFleet({"/": [f"The document expands to more than {MAX_NODES:,} values (aliases included)."]})
    return document


class _Dumper(yaml.SafeDumper):
    """Lists indented under their key, the way people write YAML by hand."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def dump(document: dict[str, Any]) -> str:
    """The document as YAML, fields in the order given (export writes the schema's order)."""
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False,
                     width=120)
    return HEADER + body
