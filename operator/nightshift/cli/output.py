"""What the CLI shows: tables, -o json/yaml, relative times and the jobs' overall health.

Pure functions of the objects the API server returned; nothing here talks to the cluster.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import yaml

from nightshift.core.runs import parse_time


def age(value: str | None, now: dt.datetime) -> str:
    """`5m ago` / `in 2h` for an RFC 3339 time, `-` when there is none."""
    t = parse_time(value)
    if t is None:
        return "-"
    secs = int((now - t).total_seconds())
    future = secs < 0
    secs = abs(secs)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            text = f"{secs // size}{unit}"
            break
    else:
        text = f"{secs}s"
    return f"in {text}" if future else f"{text} ago"


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def emit(data: Any, output: str | None, text: str) -> None:
    """`data` as JSON or YAML with -o json/yaml, else the human `text`."""
    if output == "json":
        print(json.dumps(data, indent=2, default=str))
    elif output == "yaml":
        print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), end="")
    else:
        print(text)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), {})


def failing(obj: dict[str, Any]) -> bool:
    st = obj.get("status", {})
    return (
        condition(obj, "Ready").get("status") == "False"
        or st.get("lastRun", {}).get("result") == "Failed"
        or int(st.get("consecutiveFailures") or 0) > 0
    )


def health(objs: Sequence[dict[str, Any]]) -> str:
    """The jobs' overall health: healthy, degraded when some jobs fail, critical when most do."""
    bad = sum(1 for o in objs if failing(o))
    if bad == 0:
        return "healthy"
    return "critical" if bad * 2 > len(objs) else "degraded"
