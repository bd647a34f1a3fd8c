"""http and health-check against a local http.server on 127.0.0.1 started by the test."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from _jobtest import RunJob

received: list[dict[str, Any]] = []


class Handler(BaseHTTPRequestHandler):
    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        received.append({"path": self.path, "method": self.command, "body": body, "headers": dict(self.headers)})
        if self.path == "/slow":
            time.sleep(2)
        status = {"/ok": 200, "/slow": 200, "/accepted": 202, "/bad": 400, "/busy": 429, "/fail": 503}.get(
            self.path, 404
        )
        payload = json.dumps({"path": self.path}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _reply

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_http_exit_codes(run_job: RunJob, server: str) -> None:
    params = {"url": f"{server}/accepted", "body": {"weeks": 1}, "headersFromEnv": {"Authorization": "TOKEN"}}
    ok = run_job("http", params, TOKEN="Bearer s3cret")
    assert ok.code == 0, ok.stderr
    assert ok.counts["status"] == 202 and "202" in ok.result["message"]
    last = received[-1]
    assert last["method"] == "POST" and json.loads(last["body"]) == {"weeks": 1}
    assert last["headers"]["Authorization"] == "Bearer s3cret"
    assert "s3cret" not in ok.stderr

    assert run_job("http", {"url": f"{server}/fail"}).code == 75
    assert run_job("http", {"url": f"{server}/busy"}).code == 75
    bad = run_job("http", {"url": f"{server}/bad", "method": "get"})
    assert bad.code == 65 and received[-1]["method"] == "GET"
    assert run_job("http", {"url": f"{server}/bad", "expectStatus": [400]}).code == 0
    timeout = run_job("http", {"url": f"{server}/slow", "timeout": "300ms"})
    assert timeout.code == 75 and "timed out" in timeout.result["message"]
    assert run_job("http", {"url": "http://127.0.0.1:1/"}).code == 75
    assert run_job("http", {"url": "ftp://x"}).code == 65
    dry = run_job("http", {"url": f"{server}/fail"}, "--dry-run")
    assert dry.code == 0 and dry.result["message"].startswith("dry run: would send")


@pytest.mark.postgres
def test_health_check(run_job: RunJob, server: str, dsn: str, tmp_path: Path) -> None:
    healthy = run_job(
        "health-check",
        {
            "dsn": dsn,
            "database": True,
            "endpoints": [{"name": "api", "url": f"{server}/ok"}],
            "disks": [{"path": str(tmp_path), "minFreePercent": 0, "warnFreePercent": 0}],
        },
    )
    assert healthy.code == 0, healthy.stderr
    assert healthy.counts["checks"] == 3 and healthy.counts["healthy"] == 3 and healthy.counts["unhealthy"] == 0
    assert healthy.result["message"].startswith("healthy")

    sick = run_job(
        "health-check",
        {
            "dsn": "postgresql://postgres@127.0.0.1:1/x",
            "connectTimeout": "1s",
            "database": True,
            "endpoints": [
                {"name": "api", "url": f"{server}/fail"},
                {"url": f"{server}/slow", "timeout": "300ms"},
            ],
            "disks": [{"path": str(tmp_path), "minFreePercent": 100}],
        },
    )
    assert sick.code == 1
    assert sick.counts["unhealthy"] == 4
    message = sick.result["message"]
    assert message.startswith("unhealthy:") and "database unreachable" in message and "api: status 503" in message

    degraded = run_job(
        "health-check", {"disks": [{"path": str(tmp_path), "minFreePercent": 0, "warnFreePercent": 100}]}
    )
    assert degraded.code == 0 and degraded.counts["degraded"] == 1 and degraded.result["message"].startswith("degraded")
    strict = run_job(
        "health-check",
        {
            "failOnDegraded": True,
            "disks": [{"path": str(tmp_path), "minFreePercent": 0, "warnFreePercent": 100}],
        },
    )
    assert strict.code == 1
    assert run_job("health-check", {}).code == 65
