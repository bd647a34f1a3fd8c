"""Dependency graphs between BackgroundJobs (dependsOn and runAfter edges): cycles and text/DOT views."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence


def cycle_from(start: str, edges: Callable[[str], Sequence[str]]) -> list[str] | None:
    """A cycle through `start` as a path start -> ... -> start, or None. Iterative DFS, any graph size."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in edges(node):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def find_cycles(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Every node that lies on a cycle, with one cycle for each (for `nightshift graph`)."""
    out: list[list[str]] = []
    for node in sorted(graph):
        cycle = cycle_from(node, lambda n: graph.get(n, ()))
        if cycle and not any(node in c for c in out):
            out.append(cycle)
    return out


def topological(graph: Mapping[str, Sequence[str]]) -> list[str]:
    """Nodes with their dependencies first; nodes on cycles come last, in name order."""
    done: list[str] = []
    placed: set[str] = set()
    remaining = set(graph) | {d for ds in graph.values() for d in ds}
    while remaining:
        ready = sorted(n for n in remaining if all(d in placed for d in graph.get(n, ())))
        if not ready:
            done += sorted(remaining)
            break
        done += ready
        placed |= set(ready)
        remaining -= set(ready)
    return done


def dot(graph: Mapping[str, Sequence[str]], kinds: Mapping[tuple[str, str], str] | None = None) -> str:
    lines = ["digraph nightshift {", "  rankdir=LR;"]
    for node in topological(graph):
        lines.append(f'  "{node}";')
    for node in sorted(graph):
        for dep in graph[node]:
            style = (kinds or {}).get((node, dep), "dependsOn")
            attr = ' [style=dashed, label="runAfter"]' if style == "runAfter" else ""
            lines.append(f'  "{dep}" -> "{node}"{attr};')
    lines.append("}")
    return "\n".join(lines)
