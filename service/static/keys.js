// The API key the page's price requests carry, once one is entered (it stays in this
// page's memory only). Polls send it as X-API-Key. EventSource and the browser's
// WebSocket cannot send headers: they carry a short-lived token from POST /v1/tokens in
// the URL instead (?token=), a new one asked for when a stream opens after most of the
// last one's life is gone, or after the server refused it.
"use strict";

class KeyRefused extends Error {
  constructor(status, body) {
    const code = body.error || "error";
    super(`The API key was refused (HTTP ${status} ${code}): ${body.message || "no reason given"}`);
    this.status = status;
    this.code = code;
    this.retryAfter = Number(body.retry_after) || null;
  }
}

class ApiKeyHolder {
  static RENEW_AFTER = 0.8; // of a token's life: a stream opened later gets a new one
  static TOKEN_ERRORS = ["token_expired", "invalid_token", "token_revoked"];

  constructor(onStatus) {
    this.key = null;
    this.token = null; // { value, renewAt } in local seconds
    this.onStatus = onStatus;
  }

  use(key) {
    this.key = key || null;
    this.token = null;
    this.onStatus(this.key ? "Using your API key." : "No API key: limited by address.");
  }

  headers() {
    return this.key ? { "X-API-Key": this.key } : {};
  }

  // The URL's token parameter for a stream ("" without a key); KeyRefused if the
  // service will not give one.
  async streamQuery() {
    if (!this.key) return "";
    const now = Date.now() / 1000;
    if (!this.token || this.token.renewAt <= now) {
      this.token = null;
      const response = await fetch("/v1/tokens", {
        method: "POST", headers: this.headers(), cache: "no-store",
      });
      let body = {};
      try { body = await response.json(); } catch (error) { /* shown as no reason */ }
      if (response.status !== 201) throw new KeyRefused(response.status, body);
      this.token = { value: body.token, renewAt: now + body.expires_in * ApiKeyHolder.RENEW_AFTER };
      this.onStatus(`Using your API key (${body.key}); streams carry a token for ${body.expires_in} s.`);
    }
    return `&token=${encodeURIComponent(this.token.value)}`;
  }

  // The server refused the token a stream carried: the next stream asks for another.
  forgetToken() {
    this.token = null;
  }

  static isTokenRefusal(refusal) {
    return refusal.status === 401 && ApiKeyHolder.TOKEN_ERRORS.includes(refusal.error);
  }
}

// The page's one holder: page.js and history.js send their requests with it.
const pageKey = new ApiKeyHolder((text) => {
  document.getElementById("key-status").textContent = text;
});
