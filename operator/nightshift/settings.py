"""Operator settings from the environment (NIGHTSHIFT_*), validated once at start-up."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NIGHTSHIFT_", extra="ignore")

    namespaces: list[str] = Field(default=[], description="Namespaces to serve; empty means all.")
    jobs_image: str = "ghcr.io/nightshift-dev/nightshift:0.1.0"
    jobs_python: str = "python"
    metrics_port: int = 9090
    health_port: int = 8080
    listen_address: str = Field(default="0.0.0.0", description="Address of the metrics and health endpoints.")
    priority_classes: dict[str, str] = {
        "critical": "nightshift-critical",
        "high": "nightshift-high",
        "medium": "nightshift-medium",
        "low": "nightshift-low",
    }
    use_priority_classes: bool = True
    max_concurrent_runs: int = Field(default=50, ge=1)
    gate_interval_seconds: float = Field(default=5.0, gt=0)
    webhook_port: int | None = Field(default=None, description="Serve the validating webhook on this port.")
    webhook_host: str | None = Field(default=None, description="Host name the API server dials (in the cert).")
    webhook_certfile: str | None = None
    webhook_keyfile: str | None = None
    webhook_cafile: str | None = Field(default=None, description="CA of the serving cert, for the caBundle.")
    leader_election_lease: str | None = Field(
        default=None, description="Lease name for leader election; unset: this process always leads."
    )
    pod_namespace: str = Field(default="default", description="Namespace of the Lease (the operator's own).")
    lease_duration_seconds: float = Field(default=15.0, ge=1.0, le=300.0)
    per_job_duration_histograms: bool = Field(
        default=False,
        description="Run-duration histograms per BackgroundJob (16 series each) instead of per namespace.",
    )
    kube_qps: float = Field(
        default=200.0,
        ge=0,
        description="API requests a second the operator may make on average (0: no limit); watches are not counted. "
        "Applying 10,000 BackgroundJobs takes two writes each.",
    )
    kube_burst: int = Field(default=400, ge=1, description="API requests the operator may make at once above kube_qps.")
    gate_kube_qps: float = Field(
        default=50.0,
        ge=0,
        description="The gate's own budget of API requests a second (admissions, skips, waiting notes), apart "
        "from kube_qps: an admission never queues behind a burst of reconciles (0: no limit).",
    )
    gate_kube_burst: int = Field(default=100, ge=1, description="The gate's API requests at once above gate_kube_qps.")
    reconcile_workers: int = Field(
        default=32,
        ge=1,
        le=64,
        description="BackgroundJob passes run at once (each mostly waits on the API; kube_qps bounds them all).",
    )
    gate_workers: int = Field(
        default=8, ge=1, le=64, description="The gate's writes (admissions, skips, waits) in flight at once per pass."
    )
    history_dsn: str | None = None
    history_retention_days: int = 30
    log_level: str = "INFO"
    log_json: bool = True
