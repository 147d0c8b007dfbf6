"""``crypto-service``: validate the environment, then run gunicorn with the bundled config."""

from __future__ import annotations

import argparse
import os
import sys

from service.config import ConfigError, Settings
from service.version import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="crypto-service",
        description="Serve the crypto price API with gunicorn. Every setting is an environment "
        "variable (PORT, WORKERS, THREADS, RATE_LIMIT, RATE_LIMIT_STORAGE_URI, ...): "
        "see the README's configuration table.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the environment, print the effective configuration and exit",
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"crypto-service: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        for name, value in settings.describe().items():
            print(f"{name}={value}")
        return 0

    from gunicorn.app.wsgiapp import WSGIApplication

    sys.argv = ["crypto-service", "--config", "python:service.gunicorn_conf"]
    WSGIApplication("%(prog)s").run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
