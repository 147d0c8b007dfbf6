"""Who the client of a request is: its API key when it sends one (``X-API-Key``: one of
``API_KEYS`` or a managed key), on the stream endpoints a token in the URL
(``?token=``, from ``POST /v1/tokens``), else its address (which werkzeug's ProxyFix
takes from ``X-Forwarded-For`` only when ``TRUSTED_PROXIES`` says how many hops to trust).

A key is looked up by its SHA-256 in memory, known or not the same work: its hash (once
per distinct key, memoised) and a dictionary lookup, no comparison that stops at the first
differing character. An unknown key or a bad token is refused with a 401 before anything
is counted.
"""

from __future__ import annotations

import datetime
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flask
from limits import RateLimitItem, parse

from service.config import Settings
from service.errors import ApiError
from service.key_registry import KeyRegistry, KeysUnknown
from service.key_store import ManagedKey
from service.request_facts import facts_of
from service.tokens import BadToken, TokenSigner

ANONYMOUS = "anonymous"  # the class of clients known by their address
API_KEY = "api_key"  # the class of clients that present a known key (or its token)
CLIENT_CLASSES = (API_KEY, ANONYMOUS)
MAX_HOLDERS = 100_000  # managed keys' holders a worker keeps (then starts again)
MAX_MEMO = 10_000  # keys' hashes a worker keeps (then starts again): made-up keys too
TOKEN_PARAMETER = "token"  # noqa: S105 - the query parameter's name, not a secret


@dataclass(frozen=True, slots=True)
class ClientClass:
    """A kind of client and its limit."""

    name: str  # one of CLIENT_CLASSES, a metric label
    policy: str  # the IETF RateLimit-Policy name
    limit: RateLimitItem


@dataclass(frozen=True, slots=True)
class Client:
    """Who is asking: ``key`` is the rate-limit bucket and the log field (an address or a
    key's fingerprint)."""

    key: str
    client_class: ClientClass

    @property
    def keyed(self) -> bool:
        return self.client_class.name == API_KEY


def _holder(fingerprint: str, name: str | None, limit: str) -> KeyHolder:
    return KeyHolder(
        Client(fingerprint, ClientClass(API_KEY, "api-key", parse(limit))), name, limit
    )


@dataclass(frozen=True, slots=True)
class KeyHolder:
    """What the service tells a key's holder about it."""

    client: Client
    name: str | None  # a managed key's; None for one of API_KEYS
    limit: str  # as configured, such as "600/minute"


class InvalidApiKey(ApiError):
    def __init__(self) -> None:
        super().__init__(401, "unauthorized", "The X-API-Key header does not name a known API key.")


class InvalidToken(ApiError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(401, code, message)


class KeysUnavailable(ApiError):
    def __init__(self) -> None:
        super().__init__(
            503,
            "keys_unavailable",
            "The API keys cannot be read yet (the database is not answering); retry shortly.",
            retry_after=1,
        )


class Identity:
    """Tells who a request's client is, and writes it in the request's facts."""

    def __init__(
        self,
        settings: Settings,
        managed: KeyRegistry,
        signer: TokenSigner,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.anonymous = ClientClass(ANONYMOUS, "default", parse(settings.rate_limit))
        self._default_limit = settings.rate_limit
        self._static = {
            key.digest: _holder(key.fingerprint, None, settings.limit_of(key))
            for key in settings.api_keys
        }
        self._static_by_fingerprint = {h.client.key: h for h in self._static.values()}
        self._managed_holders: dict[str, KeyHolder] = {}
        self._digests: dict[str, bytes] = {}  # presented keys' SHA-256
        self._managed = managed
        self._signer = signer
        self._clock = clock
        self.token_seconds = settings.token_ttl_seconds

    def _of_managed(self, key: ManagedKey | None) -> KeyHolder | None:
        if key is None:
            return None
        # A key's name and limit never change (a rotation makes a new key): one holder
        # per fingerprint, made at its first request.
        holder = self._managed_holders.get(key.fingerprint)
        if holder is None:
            if len(self._managed_holders) >= MAX_HOLDERS:
                self._managed_holders.clear()
            limit = key.rate_limit or self._default_limit
            holder = self._managed_holders[key.fingerprint] = _holder(
                key.fingerprint, key.name, limit
            )
        return holder

    def identify(self, environ: dict[str, Any], accept_token: bool = False) -> Client:
        """The client; raises a 401 for a key or token that is not good, a 503 while the
        managed keys cannot be read."""
        presented = environ.get("HTTP_X_API_KEY")
        if presented is not None:
            client = self._by_key(presented, environ)
        elif accept_token and flask.request.args.get(TOKEN_PARAMETER):  # empty: none
            client = self._by_token(flask.request.args[TOKEN_PARAMETER], environ)
        else:
            client = Client(environ.get("REMOTE_ADDR") or "unknown", self.anonymous)
        self._tell(environ, client)
        return client

    def _by_key(self, presented: str, environ: dict[str, Any]) -> Client:
        digest = self._digests.get(presented)
        if digest is None:
            # Each key hashed once (a third of a keyed request's cost, bench/NOTES.md),
            # good or not, so that a lookup is the same work whether the key exists; kept
            # in a bounded memo. WSGI strings are latin-1 decoded bytes: encoded back, the
            # key's own bytes.
            digest = hashlib.sha256(presented.encode("latin-1", "replace")).digest()
            if len(self._digests) >= MAX_MEMO:
                self._digests.clear()
            self._digests[presented] = digest
        holder = self._static.get(digest)
        if holder is None:
            try:
                holder = self._of_managed(self._managed.lookup(digest))
            except KeysUnknown:
                self._tell(environ, Client("unknown-key", self.anonymous))
                raise KeysUnavailable() from None
        if holder is None:
            self._tell(environ, Client("invalid-key", self.anonymous))
            raise InvalidApiKey()
        return holder.client

    def _by_token(self, token: str, environ: dict[str, Any]) -> Client:
        self._tell(environ, Client("invalid-token", self.anonymous))
        try:
            claim = self._signer.read(token)
        except BadToken:
            raise InvalidToken(
                "invalid_token",
                "The token is not one this service issued; get one with POST /v1/tokens.",
            ) from None
        if claim.expires_at <= self._clock():
            at = datetime.datetime.fromtimestamp(claim.expires_at, datetime.UTC).isoformat()
            raise InvalidToken(
                "token_expired", f"The token expired at {at}; get a new one with POST /v1/tokens."
            )
        try:
            holder = self.holder(claim.fingerprint)
        except KeysUnknown:
            raise KeysUnavailable() from None
        if holder is None:
            raise InvalidToken(
                "token_revoked", "The token's API key has been revoked or has expired."
            )
        return holder.client

    def issue_token(self, fingerprint: str) -> tuple[str, int]:
        """A token for the key ``fingerprint``, and when it expires (unix seconds)."""
        expires_at = int(self._clock()) + self.token_seconds
        return self._signer.issue(fingerprint, expires_at), expires_at

    def holder(self, fingerprint: str) -> KeyHolder | None:
        """The key ``fingerprint`` while it works (KeysUnknown: cannot tell yet)."""
        static = self._static_by_fingerprint.get(fingerprint)
        if static is not None:
            return static
        return self._of_managed(self._managed.by_fingerprint(fingerprint))

    @staticmethod
    def _tell(environ: dict[str, Any], client: Client) -> None:
        facts = facts_of(environ)
        facts.client, facts.client_class = client.key, client.client_class.name
