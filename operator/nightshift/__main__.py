"""`python -m nightshift` (also `nightshift-operator`): run the operator with settings from the environment.

The Runtime and the kopf registry are built here, from NIGHTSHIFT_* settings (namespaces, ports, log
format, webhook), so the chart and the image need no kopf flags and nothing registers at import.
"""

from __future__ import annotations

import argparse
import logging

import kopf

from nightshift.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="nightshift-operator", description=__doc__)
    parser.add_argument("--verbose", action="store_true", help="debug logging (same as NIGHTSHIFT_LOG_LEVEL=DEBUG)")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.verbose:
        settings.log_level = "DEBUG"
    kopf.configure(
        verbose=settings.log_level.upper() == "DEBUG",
        log_format=kopf.LogFormat.JSON if settings.log_json else kopf.LogFormat.FULL,
    )
    logging.getLogger().setLevel(settings.log_level.upper())
    if settings.log_level.upper() != "DEBUG":
        # kopf says "Handler 'on_job' succeeded." at INFO for every event it hands us, and aiohttp logs
        # every webhook call: 372,000 lines in one burst of 8,000 finished runs at 18,500 jobs.
        # Failures are WARNING and above, and stay.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    from nightshift.controller.handlers import registry
    from nightshift.controller.runtime import Runtime

    rt = Runtime(settings)
    kopf.run(
        registry=registry(rt),
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        standalone=True,
        liveness_endpoint=f"http://{settings.listen_address}:{settings.health_port}/healthz",
    )


if __name__ == "__main__":
    main()
