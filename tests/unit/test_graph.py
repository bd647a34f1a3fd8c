from __future__ import annotations

import itertools
from collections.abc import Callable

from nightshift.core import graph

DAG = {"report": ["extract", "clean"], "clean": ["extract"], "extract": [], "archive": ["report"]}


def edges(g: dict[str, list[str]]) -> Callable[[str], list[str]]:
    return lambda n: g.get(n, [])


def test_cycle_from_none_in_a_dag() -> None:
    for node in DAG:
        assert graph.cycle_from(node, edges(DAG)) is None


def test_cycle_from_self_loop() -> None:
    assert graph.cycle_from("a", edges({"a": ["a"]})) == ["a", "a"]


def test_cycle_from_returns_a_real_path() -> None:
    g = {"a": ["b"], "b": ["c", "x"], "c": ["a"], "x": []}
    cycle = graph.cycle_from("a", edges(g))
    assert cycle is not None and cycle[0] == cycle[-1] == "a"
    assert cycle == ["a", "b", "c", "a"]
    for src, dst in itertools.pairwise(cycle):
        assert dst in g[src]


def test_cycle_from_a_node_that_only_reaches_a_cycle() -> None:
    g = {"start": ["a"], "a": ["b"], "b": ["a"]}
    assert graph.cycle_from("start", edges(g)) is None
    assert graph.cycle_from("a", edges(g)) == ["a", "b", "a"]


def test_cycle_from_unknown_nodes_and_large_graphs() -> None:
    assert graph.cycle_from("nope", edges({})) is None
    n = 3000  # iterative: deeper than the recursion limit
    chain = {f"n{i}": [f"n{i + 1}"] for i in range(n)}
    assert graph.cycle_from("n0", edges(chain)) is None
    chain[f"n{n}"] = ["n0"]
    cycle = graph.cycle_from("n0", edges(chain))
    assert cycle is not None and len(cycle) == n + 2


def test_find_cycles() -> None:
    assert graph.find_cycles(DAG) == []
    g = {"a": ["b"], "b": ["a"], "c": ["c"], "d": ["a"], "e": []}
    cycles = graph.find_cycles(g)
    assert cycles == [["a", "b", "a"], ["c", "c"]]  # b lies on a's cycle already; d only reaches it


def test_topological() -> None:
    order = graph.topological(DAG)
    assert order == ["extract", "clean", "report", "archive"]
    pos = {n: i for i, n in enumerate(order)}
    for node, deps in DAG.items():
        assert all(pos[d] < pos[node] for d in deps)


def test_topological_includes_dependency_only_nodes_and_puts_cycles_last() -> None:
    assert graph.topological({"a": ["ghost"]}) == ["ghost", "a"]
    g = {"x": ["y"], "y": ["x"], "z": [], "w": ["x"]}
    assert graph.topological(g) == ["z", "w", "x", "y"]
    assert graph.topological({}) == []


def test_dot() -> None:
    text = graph.dot({"report": ["extract", "eval"]}, {("report", "eval"): "runAfter"})
    assert text.splitlines() == [
        "digraph nightshift {",
        "  rankdir=LR;",
        '  "eval";',
        '  "extract";',
        '  "report";',
        '  "extract" -> "report";',
        '  "eval" -> "report" [style=dashed, label="runAfter"];',
        "}",
    ]
    assert graph.dot({}) == "digraph nightshift {\n  rankdir=LR;\n}"
