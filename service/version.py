"""The installed version of the service, for the build info metric and the OpenAPI document."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("crypto-price-service")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
