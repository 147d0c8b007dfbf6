"""The client's version, sent in its User-Agent."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("crypto-price-service")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"

USER_AGENT = f"crypto-poll/{__version__}"
