from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from nightshift.api import crd

BGJ = "backgroundjobs.nightshift.dev.yaml"
QUEUE = "backgroundjobqueues.nightshift.dev.yaml"
RUN = "backgroundjobruns.nightshift.dev.yaml"
ALL = [BGJ, QUEUE, RUN]


@pytest.fixture(scope="module")
def crds() -> dict[str, dict[str, Any]]:
    return crd.generate()


def schema_of(obj: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = obj["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return result


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def all_keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from all_keys(v)
    elif isinstance(value, list):
        for v in value:
            yield from all_keys(v)


@pytest.mark.parametrize("name", ALL)
def test_no_json_schema_constructs_the_api_server_rejects(crds: dict[str, dict[str, Any]], name: str) -> None:
    keys = set(all_keys(schema_of(crds[name])))
    assert not keys & {"$ref", "$defs", "anyOf", "oneOf", "allOf", "title", "const", "examples", "nullable"}


@pytest.mark.parametrize("name", ALL)
def test_every_node_has_a_type(crds: dict[str, dict[str, Any]], name: str) -> None:
    untyped = [p for p, n in walk(schema_of(crds[name])) if "type" not in n]
    assert untyped == []


@pytest.mark.parametrize("name", ALL)
def test_every_string_is_bounded(crds: dict[str, dict[str, Any]], name: str) -> None:
    """maxLength or enum; the API server bounds date-time itself, and apiVersion/kind are the standard fields."""
    unbounded = [
        p
        for p, n in walk(schema_of(crds[name]))
        if n.get("type") == "string"
        and "maxLength" not in n
        and "enum" not in n
        and n.get("format") != "date-time"
        and p not in (".apiVersion", ".kind")
    ]
    assert unbounded == []
    patterned = [p for p, n in walk(schema_of(crds[name])) if "pattern" in n and "maxLength" not in n]
    assert patterned == []


@pytest.mark.parametrize("name", ALL)
def test_every_array_is_bounded(crds: dict[str, dict[str, Any]], name: str) -> None:
    arrays = [(p, n) for p, n in walk(schema_of(crds[name])) if n.get("type") == "array"]
    assert arrays
    assert [p for p, n in arrays if "maxItems" not in n] == []


@pytest.mark.parametrize("name", ALL)
def test_every_map_is_bounded_or_opaque(crds: dict[str, dict[str, Any]], name: str) -> None:
    maps = [p for p, n in walk(schema_of(crds[name])) if "additionalProperties" in n and "maxProperties" not in n]
    assert maps == []


def test_opaque_fields_preserve_unknown_fields(crds: dict[str, dict[str, Any]]) -> None:
    spec = schema_of(crds[BGJ])["properties"]["spec"]
    job = spec["properties"]["job"]["properties"]
    for name in ("params", "resources"):
        assert {k: v for k, v in job[name].items() if k != "description"} == {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
        }
    assert job["env"]["items"]["x-kubernetes-preserve-unknown-fields"] is True


def test_cel_rules(crds: dict[str, dict[str, Any]]) -> None:
    root = schema_of(crds[BGJ])
    spec = root["properties"]["spec"]
    job = spec["properties"]["job"]
    rules = {r["rule"]: (r["fieldPath"], r["message"]) for r in spec["x-kubernetes-validations"]}
    assert rules == {
        "!has(self.every) || !has(self.schedule)": (".every", "set at most one of schedule, every and at"),
        "!has(self.at) || (!has(self.schedule) && !has(self.every))": (
            ".at",
            "set at most one of schedule, every and at",
        ),
    }
    job_rules = {r["rule"]: r["fieldPath"] for r in job["x-kubernetes-validations"]}
    assert job_rules["has(self.builtin) != has(self.image)"] == ".builtin"
    root_rules = {r["rule"]: r for r in root["x-kubernetes-validations"]}
    rule = root_rules["self.metadata.name.size() <= 52"]
    assert "52" in rule["message"] and rule["fieldPath"] == ".metadata.name"
    # the API server accepts a fieldPath only if the schema declares it
    assert root["properties"]["metadata"]["properties"]["name"]["type"] == "string"


def test_required_and_defaults(crds: dict[str, dict[str, Any]]) -> None:
    root = schema_of(crds[BGJ])
    assert root["required"] == ["spec"]
    spec = root["properties"]["spec"]
    assert spec["required"] == ["job"]
    props = spec["properties"]
    assert props["timeZone"]["default"] == "UTC"
    assert {k: v for k, v in props["priority"].items() if k != "description"} == {
        "default": "medium",
        "enum": ["critical", "high", "medium", "low"],
        "type": "string",
    }
    assert props["concurrencyPolicy"]["enum"] == ["Allow", "Forbid", "Replace"]
    assert props["at"] == {"format": "date-time", "type": "string", "description": props["at"]["description"]}
    assert props["retry"]["properties"]["nonRetryableExitCodes"]["items"] == {
        "maximum": 255,
        "minimum": 1,
        "type": "integer",
    }
    for name in ("dependsOn", "runAfter", "retry", "history", "job", "schedule"):
        assert name in props
    conditions = root["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_names_and_subresources(crds: dict[str, dict[str, Any]]) -> None:
    for file, kind, short in ((BGJ, "BackgroundJob", ["bgj"]), (QUEUE, "BackgroundJobQueue", ["bgjq"])):
        obj = crds[file]
        assert obj["apiVersion"] == "apiextensions.k8s.io/v1"
        assert obj["metadata"]["name"] == file.removesuffix(".yaml")
        s = obj["spec"]
        assert s["group"] == "nightshift.dev" and s["scope"] == "Namespaced"
        assert s["names"]["kind"] == kind
        assert s["names"]["plural"] == kind.lower() + "s"
        assert s["names"]["shortNames"] == short
        assert s["names"]["categories"] == ["nightshift"]
        (version,) = s["versions"]
        assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
        assert version["subresources"] == {"status": {}}


def test_printer_columns(crds: dict[str, dict[str, Any]]) -> None:
    columns = crds[BGJ]["spec"]["versions"][0]["additionalPrinterColumns"]
    default = [c["name"] for c in columns if not c.get("priority")]
    wide = [c["name"] for c in columns if c.get("priority") == 1]
    assert default == ["Schedule", "Suspended", "Ready", "Last Result", "Last Success", "Next Run", "Age"]
    assert wide == ["Queue", "Priority", "Message"]
    by_name = {c["name"]: c for c in columns}
    assert by_name["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert by_name["Age"] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    assert by_name["Suspended"]["type"] == "boolean"
    assert by_name["Last Success"]["type"] == "date"
    # every column points at a field the schema knows (metadata aside)
    root = schema_of(crds[BGJ])
    for c in columns:
        parts = c["jsonPath"].split("[")[0].strip(".").split(".")
        if parts[0] == "metadata":
            continue
        node = root
        for p in parts:
            node = node["properties"][p]


def test_rendered_yaml_round_trips(crds: dict[str, dict[str, Any]]) -> None:
    for name, text in crd.render().items():
        assert text.startswith("# Generated from operator/nightshift/api/models.py")
        assert yaml.safe_load(text) == crds[name]


def test_crds_on_disk_are_up_to_date() -> None:
    stale = crd.stale()
    assert stale == [], f"run `make crds` (python -m nightshift.api.crd --write): stale {[str(p) for p in stale]}"


def test_structural_rejects_real_unions() -> None:
    with pytest.raises(ValueError, match="union"):
        crd.structural({"anyOf": [{"type": "string"}, {"type": "integer"}]}, {})


def test_structural_inlines_refs_and_drops_null() -> None:
    defs = {"X": {"type": "object", "title": "X", "properties": {"a": {"const": "b", "title": "A"}}}}
    out = crd.structural({"anyOf": [{"$ref": "#/$defs/X"}, {"type": "null"}], "default": None}, defs)
    assert out == {"type": "object", "properties": {"a": {"enum": ["b"], "type": "string"}}}


def _properties(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property below `node`, except the standard fields and what is kept opaque."""
    for name, sub in (node.get("properties") or {}).items():
        where = f"{path}.{name}"
        if path == "" and name in ("apiVersion", "kind", "metadata"):
            continue
        yield where, sub
        if sub.get("x-kubernetes-preserve-unknown-fields"):
            continue
        yield from _properties(sub, where)
        if isinstance(sub.get("items"), dict):
            yield from _properties(sub["items"], f"{where}[]")
        if isinstance(sub.get("additionalProperties"), dict):
            yield from _properties(sub["additionalProperties"], f"{where}{{}}")


@pytest.mark.parametrize("name", ALL)
def test_every_property_is_described(crds: dict[str, dict[str, Any]], name: str) -> None:
    """`kubectl explain` shows these: a field without a description is a field people guess at."""
    props = list(_properties(schema_of(crds[name])))
    assert len(props) > 10
    assert [p for p, n in props if not str(n.get("description") or "").strip()] == []


@pytest.mark.parametrize("name", ALL)
def test_every_cel_rule_names_a_field(crds: dict[str, dict[str, Any]], name: str) -> None:
    """Without fieldPath the API server reports the rule's object, which at the root prints as `<nil>`.

    Transition rules on a whole object (self == oldSelf) have no one field to name; they must not sit
    at the root. Every fieldPath must resolve in the schema, or the API server rejects the CRD.
    """
    root = schema_of(crds[name])
    for where, node in walk(root):
        for rule in node.get("x-kubernetes-validations") or []:
            if "fieldPath" not in rule:
                assert rule["rule"] == "self == oldSelf" and where != "", (where, rule)
                continue
            target = node
            for part in rule["fieldPath"].strip(".").split("."):
                target = target["properties"][part]
            assert rule.get("reason", "FieldValueInvalid") in (
                "FieldValueInvalid",
                "FieldValueForbidden",
                "FieldValueRequired",
            )
