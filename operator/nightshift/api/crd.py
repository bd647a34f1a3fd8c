"""CRDs generated from the pydantic models: `python -m nightshift.api.crd --write` (also `make crds`).

pydantic emits JSON Schema with $refs, anyOf-with-null for optionals and consts; the API server
wants a structural OpenAPI v3 schema, so this inlines references, drops nulls and titles, turns
consts into enums and keeps the Kubernetes extensions (CEL rules, list types, preserved fields).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from nightshift.api.models import GROUP, VERSION, BackgroundJob, BackgroundJobQueue, BackgroundJobRun

REPO_ROOT = Path(__file__).resolve().parents[3]
OUTPUTS = [REPO_ROOT / "crds", REPO_ROOT / "charts" / "nightshift" / "crds"]
_DROP = {"title", "examples"}


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        target = defs[schema["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return structural(merged, defs)
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {schema}")
        rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default") or (k == "default" and v is not None)}
        return structural({**options[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP or key == "$defs":
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "properties":
            out["properties"] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out["items"] = structural(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out["additionalProperties"] = structural(value, defs)
        elif key == "default" and isinstance(value, dict):
            continue  # objects are defaulted field by field
        else:
            out[key] = value
    if out.get("x-kubernetes-preserve-unknown-fields"):
        out["type"] = "object"
    elif "properties" in out or "additionalProperties" in out:
        out.setdefault("type", "object")
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def openapi(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema = structural(raw, raw.get("$defs", {}))
    metadata: dict[str, Any] = {"type": "object"}
    if any(r.get("fieldPath", "").startswith(".metadata.name") for r in schema.get("x-kubernetes-validations", [])):
        # A rule's fieldPath must name a field the schema declares; the API server allows exactly this
        # much of metadata in a CRD schema (name and generateName), and 253 is its own bound on names.
        metadata["properties"] = {"name": {"type": "string", "maxLength": 253}}
    schema["properties"].update({"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": metadata})
    schema["required"] = sorted(set(schema.get("required", [])) - {"metadata", "apiVersion", "kind"})
    if not schema["required"]:
        del schema["required"]
    schema.pop("description", None)
    return schema


def _column(name: str, path: str, type_: str = "string", priority: int = 0, description: str = "") -> dict[str, Any]:
    col: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if priority:
        col["priority"] = priority
    if description:
        col["description"] = description
    return col


def _crd(
    kind: str, plural: str, short: list[str], model: type[BaseModel], columns: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "nightshift"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short,
                "categories": ["nightshift"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": openapi(model)},
                }
            ],
        },
    }


def generate() -> dict[str, dict[str, Any]]:
    ready = '.status.conditions[?(@.type=="Ready")]'
    return {
        f"backgroundjobs.{GROUP}.yaml": _crd(
            "BackgroundJob",
            "backgroundjobs",
            ["bgj"],
            BackgroundJob,
            [
                _column("Schedule", ".status.schedule"),
                _column("Suspended", ".spec.suspend", "boolean"),
                _column("Ready", f"{ready}.status"),
                _column("Last Result", ".status.lastRun.result"),
                _column("Last Success", ".status.lastSuccessfulTime", "date"),
                _column("Next Run", ".status.nextScheduleTime"),
                _column("Age", ".metadata.creationTimestamp", "date"),
                _column("Queue", ".spec.queue", priority=1),
                _column("Priority", ".spec.priority", priority=1),
                _column("Message", f"{ready}.message", priority=1),
            ],
        ),
        f"backgroundjobqueues.{GROUP}.yaml": _crd(
            "BackgroundJobQueue",
            "backgroundjobqueues",
            ["bgjq"],
            BackgroundJobQueue,
            [
                _column("Concurrency", ".spec.concurrency", "integer"),
                _column("Paused", ".spec.paused", "boolean"),
                _column("Waiting", ".status.waiting", "integer"),
                _column("Running", ".status.running", "integer"),
                _column("Age", ".metadata.creationTimestamp", "date"),
            ],
        ),
        f"backgroundjobruns.{GROUP}.yaml": _crd(
            "BackgroundJobRun",
            "backgroundjobruns",
            ["bgjr"],
            BackgroundJobRun,
            [
                _column("Job", ".spec.backgroundJob"),
                _column("Phase", ".status.phase"),
                _column("Attempts", ".status.attempts", "integer"),
                _column("Started", ".status.startTime", "date"),
                _column("Finished", ".status.completionTime", "date"),
                _column("Age", ".metadata.creationTimestamp", "date"),
                _column("Run", ".status.runId", priority=1),
                _column("Reason", ".status.reason", priority=1),
            ],
        ),
    }


def render() -> dict[str, str]:
    header = "# Generated from operator/nightshift/api/models.py by `make crds`; do not edit.\n"
    return {name: header + yaml.safe_dump(crd, sort_keys=False, width=120) for name, crd in generate().items()}


def stale() -> list[Path]:
    files = render()
    return [d / n for d in OUTPUTS for n, text in files.items() if not (d / n).exists() or (d / n).read_text() != text]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--write", action="store_true", help="write crds/ and the chart's crds/")
    args = p.parse_args(argv)
    files = render()
    if not args.write:
        sys.stdout.write("---\n".join(files.values()))
        return 0
    for d in OUTPUTS:
        d.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (d / name).write_text(text)
    print(f"wrote {len(files)} CRDs to {', '.join(str(d.relative_to(REPO_ROOT)) for d in OUTPUTS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
