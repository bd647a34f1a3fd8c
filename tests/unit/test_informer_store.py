"""The informers' store and indexes, fed events by hand (no cluster; the stream itself is tested
against the real API server in tests/integration/test_informer.py)."""

from __future__ import annotations

from typing import Any

from nightshift.controller.informer import Informer, MultiIndex
from nightshift.infra.kube import JOBS


def obj(name: str, ns: str = "team", *, colour: str = "red", size: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns}, "spec": {"colour": colour, "size": size}}


def informer(namespaces: list[str] | None = None) -> tuple[Informer, list[tuple[str, Any, Any, Any]]]:
    changes: list[tuple[str, Any, Any, Any]] = []
    inf = Informer(
        lambda: None,  # type: ignore[arg-type,return-value]
        JOBS,
        lambda o: o["spec"]["colour"] if o["spec"]["colour"] != "none" else None,  # the projection: one field
        name="things",
        namespaces=namespaces,
        indexers={"colour": lambda k, c: ((k[0], c), k[1])},
        on_change=lambda kind, key, old, new: changes.append((kind, key, old, new)),
    )
    return inf, changes


def test_a_change_outside_the_projection_is_no_change() -> None:
    inf, changes = informer()
    inf._apply("ADDED", obj("a"))
    inf._apply("MODIFIED", obj("a", size=2))  # size is not projected
    assert changes == [("ADDED", ("team", "a"), None, "red")]
    inf._apply("MODIFIED", obj("a", colour="blue"))
    assert changes[-1] == ("MODIFIED", ("team", "a"), "red", "blue")


def test_an_object_is_filed_under_one_key_and_moves_when_its_projection_does() -> None:
    inf, _ = informer()
    ix = inf.indexes["colour"]
    inf._apply("ADDED", obj("a"))
    inf._apply("ADDED", obj("b"))
    assert sorted(ix[("team", "red")]) == ["a", "b"]
    inf._apply("MODIFIED", obj("a", colour="blue"))
    assert list(ix[("team", "red")]) == ["b"] and list(ix[("team", "blue")]) == ["a"]
    inf._apply("DELETED", obj("b"))
    assert ("team", "red") not in ix and len(ix) == 1 and len(inf.objects) == 1


def test_a_projection_of_none_stores_nothing_and_forgets_what_was_stored() -> None:
    inf, changes = informer()
    inf._apply("ADDED", obj("a", colour="none"))
    assert inf.objects == {} and changes == []
    inf._apply("MODIFIED", obj("a"))
    inf._apply("MODIFIED", obj("a", colour="none"))
    assert inf.objects == {} and len(inf.indexes["colour"]) == 0
    assert changes[-1] == ("MODIFIED", ("team", "a"), "red", None)


def test_a_deletion_reports_what_was_stored() -> None:
    inf, changes = informer()
    inf._apply("ADDED", obj("a"))
    inf._apply("DELETED", obj("a", colour="blue"))
    assert changes[-1] == ("DELETED", ("team", "a"), "red", None) and inf.objects == {}
    inf._apply("DELETED", obj("never-seen"))  # deleted before it was listed: told with its last state
    assert changes[-1] == ("DELETED", ("team", "never-seen"), "red", None)


def test_patterns_are_watched_cluster_wide_and_filtered_here() -> None:
    inf, _ = informer(["team-*"])
    assert inf._scopes == [None]
    inf._apply("ADDED", obj("a", "team-x"))
    inf._apply("ADDED", obj("b", "other"))
    assert list(inf.objects) == [("team-x", "a")]
    named, _ = informer(["one", "two"])
    assert named._scopes == ["one", "two"] and named.serves("anything")  # the API server filters those


def test_a_handler_that_raises_does_not_stop_the_store() -> None:
    inf = Informer(
        lambda: None,  # type: ignore[arg-type,return-value]
        JOBS,
        lambda o: o["spec"]["colour"],
        name="things",
        on_change=lambda *a: 1 / 0,  # type: ignore[func-returns-value]
    )
    inf._apply("ADDED", obj("a"))
    assert inf.objects == {("team", "a"): "red"}


class Filed:
    """A MultiIndex with the memory of where each object went, as the informer keeps it."""

    def __init__(self) -> None:
        self.ix: MultiIndex[Any, Any] = MultiIndex()
        self.where: dict[tuple[str, str], Any] = {}

    def file(self, obj: tuple[str, str], entry: Any) -> None:
        self.ix.refile(obj, self.where.get(obj), entry)
        self.where[obj] = entry


def test_the_multi_index_iterates_over_a_copy() -> None:
    f = Filed()
    f.file(("n", "a"), ("k1", 1))
    f.file(("n", "b"), ("k2", 2))
    for _ in f.ix:
        f.file(("n", "c"), ("k3", 3))  # filing while iterating, as a pass that awaits may
    assert set(f.ix) == {"k1", "k2", "k3"}
    f.file(("n", "a"), None)
    assert "k1" not in f.ix


def test_an_object_may_be_filed_under_several_keys() -> None:
    f = Filed()
    f.file(("n", "c"), [("a", "c"), ("b", "c"), ("a", "c")])  # runs after a and b (a named twice)
    f.file(("n", "d"), [("a", "d")])
    assert sorted(f.ix["a"]) == ["c", "d"] and list(f.ix["b"]) == ["c"]
    f.file(("n", "c"), [("b", "c")])
    assert list(f.ix["a"]) == ["d"] and list(f.ix["b"]) == ["c"]
    f.file(("n", "c"), [])
    f.file(("n", "d"), None)
    assert len(f.ix) == 0


def test_a_key_holds_one_object_or_several_and_back() -> None:
    f = Filed()
    f.file(("n", "a"), ("k", 1))
    assert list(f.ix["k"]) == [1]
    f.file(("n", "a"), ("k", 2))  # the same object again: replaced, not added
    assert list(f.ix["k"]) == [2]
    f.file(("n", "b"), ("k", 3))
    assert sorted(f.ix["k"]) == [2, 3]
    f.file(("n", "a"), None)
    assert list(f.ix["k"]) == [3]
    f.file(("n", "c"), ("k", 4))
    f.file(("n", "b"), ("other", 3))
    assert list(f.ix["k"]) == [4] and list(f.ix["other"]) == [3]
    f.file(("n", "c"), None)
    assert "k" not in f.ix and len(f.ix) == 1
