// The live price page: one transport at a time (poll, long-poll, SSE, WebSocket), the
// prices as text, a uPlot chart per symbol, and counters for the chosen transport.
// Polls as politely as crypto-poll: one batch request per tick, tick-aligned with a
// random spread, If-None-Match, Retry-After on 429, backoff while the server is down,
// and no polling while the tab is hidden.
"use strict";

(() => {
  const body = document.body;
  const symbols = body.dataset.symbols.split(",");
  const tickSeconds = Number(body.dataset.tickSeconds);
  const query = `symbols=${symbols.join(",")}`;
  const SPREAD = 0.25;
  const HISTORY = 60;
  const MAX_BACKOFF = 30;
  const notice = document.getElementById("notice");
  const select = document.getElementById("transport");
  const keys = pageKey; // static/keys.js
  const counterIds = ["requests", "bytes", "not-modified", "reconnects"];
  let counters = {};
  let delays = new DelayMedian();
  let session = null;
  let nextTickAt = null; // server time
  let offset = 0; // server clock minus local clock, seconds

  const charts = {};
  const series = {};
  const last = {};

  function now() { return Date.now() / 1000; }

  // What stops a session's pending work (a timer, a listener, a stream) when another
  // transport is chosen. Each leaves the set when its work is done (the returned
  // function), so the set holds what is pending, not everything there was: a poll a tick
  // for hours adds nothing. The page shows its size (data-pending) for the tests.
  function pending(current, stop) {
    const shown = () => {
      if (current === session) body.dataset.pending = String(current.cancel.size);
    };
    current.cancel.add(stop);
    shown();
    return () => { current.cancel.delete(stop); shown(); };
  }

  function sleep(seconds, current) {
    return new Promise((resolve) => {
      let timer = null;
      const done = pending(current, () => { clearTimeout(timer); resolve(); });
      timer = setTimeout(() => { done(); resolve(); }, Math.max(0, seconds) * 1000);
    });
  }

  function resetCounters() {
    counters = { requests: 0, bytes: 0, "not-modified": 0, reconnects: 0 };
    delays = new DelayMedian();
    for (const id of counterIds) document.getElementById(id).textContent = "0";
    document.getElementById("delay").textContent = "–";
  }

  function count(name, amount = 1) {
    counters[name] += amount;
    document.getElementById(name).textContent = String(counters[name]);
  }

  function headerBytes(response) {
    let size = 0;
    response.headers.forEach((value, name) => { size += name.length + value.length + 4; });
    return size;
  }

  function showNotice(text) {
    notice.textContent = text;
    notice.hidden = !text;
  }

  function makeChart(symbol, element) {
    series[symbol] = [[], []];
    charts[symbol] = new uPlot({
      width: Math.max(200, element.clientWidth),
      height: 120,
      legend: { show: false },
      cursor: { show: false },
      scales: { x: { time: true } },
      axes: [{ show: false }, { size: 50 }],
      series: [{}, { stroke: "#1f6feb", width: 2 }],
    }, series[symbol], element);
  }

  function plot(symbol, tick, price, updatedAt) {
    const data = series[symbol];
    const at = data[0].length;
    if (at && updatedAt <= data[0][at - 1]) return; // an older or the same tick
    data[0].push(updatedAt);
    data[1].push(price);
    if (data[0].length > HISTORY) { data[0].shift(); data[1].shift(); }
    charts[symbol].setData(data);
    charts[symbol].root.parentElement.dataset.points = String(data[0].length);
    document.dispatchEvent(new CustomEvent("price-point", { detail: { symbol, tick, price, updatedAt } }));
  }

  function show(documentBody, receivedAt) {
    offset = documentBody.timestamp - receivedAt;
    for (const quote of documentBody.prices) {
      const card = document.querySelector(`.quote[data-symbol="${quote.symbol}"]`);
      if (!card) continue;
      const previous = last[quote.symbol];
      if (previous && quote.tick <= previous.tick) continue;
      const priceText = card.querySelector(".price");
      priceText.textContent = `$${quote.price.toFixed(2)}`;
      priceText.dataset.tick = String(quote.tick);
      const change = card.querySelector(".change");
      if (previous) {
        const delta = quote.price - previous.price;
        const sign = delta > 0 ? "▲" : delta < 0 ? "▼" : "=";
        change.textContent = `${sign} ${delta >= 0 ? "+" : ""}${delta.toFixed(2)} ` +
          `(${(delta / previous.price * 100).toFixed(2)} %)`;
        change.className = `change ${delta > 0 ? "up" : delta < 0 ? "down" : ""}`;
        delays.add(receivedAt + offset - quote.updated_at);
      }
      plot(quote.symbol, quote.tick, quote.price, quote.updated_at);
      last[quote.symbol] = quote;
      nextTickAt = quote.next_update_at;
    }
    const median = delays.median();
    if (median !== null) {
      document.getElementById("delay").textContent =
        `${median === Infinity ? `over ${DelayMedian.LIMIT_MS}` : median} ms (median)`;
    }
  }

  function retryAfter(response) {
    const value = response.headers.get("Retry-After");
    return value && /^[0-9]{1,6}$/.test(value) ? Number(value) : 1;
  }

  function backoff(failures) {
    return Math.min(MAX_BACKOFF, 0.5 * 2 ** failures) * Math.random() + 0.25;
  }

  function waitVisible(current) {
    return new Promise((resolve) => {
      let done = null;
      const visible = () => {
        document.removeEventListener("visibilitychange", visible);
        done();
        resolve();
      };
      document.addEventListener("visibilitychange", visible);
      done = pending(current, visible);
    });
  }

  async function httpLoop(current, longPoll) {
    let etag = null;
    let failures = 0;
    const url = `/v1/prices?${query}`;
    while (current.active) {
      if (document.hidden) { await waitVisible(current); continue; }
      const headers = keys.headers();
      if (etag) headers["If-None-Match"] = etag;
      if (etag && longPoll) headers.Prefer = "wait=30";
      let wait = 1;
      try {
        count("requests");
        const response = await fetch(url, { headers, cache: "no-store", signal: current.abort.signal });
        count("bytes", headerBytes(response));
        if (response.status === 200) {
          const text = await response.text();
          count("bytes", new TextEncoder().encode(text).length);
          etag = response.headers.get("ETag");
          show(JSON.parse(text), now());
          failures = 0;
          showNotice("");
          wait = longPoll ? 0 : untilNextTick();
        } else if (response.status === 304) {
          count("not-modified");
          failures = 0;
          wait = longPoll ? 0 : untilNextTick();
        } else if (response.status === 429 || response.status === 503) {
          wait = retryAfter(response);
          showNotice(`The server asked us to wait ${wait} s (HTTP ${response.status}).`);
        } else if (response.status === 401) {
          failures += 1;
          wait = backoff(failures);
          let body = {};
          try { body = await response.json(); } catch (error) { /* shown as no reason */ }
          showNotice(`${new KeyRefused(401, body).message}; retrying in ${wait.toFixed(1)} s.`);
        } else {
          failures += 1;
          wait = backoff(failures);
          showNotice(`The server answered HTTP ${response.status}; retrying in ${wait.toFixed(1)} s.`);
        }
      } catch (error) {
        if (!current.active) return;
        failures += 1;
        wait = backoff(failures);
        showNotice(`The server is unreachable; retrying in ${wait.toFixed(1)} s.`);
      }
      await sleep(wait, current);
    }
  }

  function untilNextTick() {
    if (nextTickAt === null) return tickSeconds;
    return Math.max(0.05, nextTickAt - (now() + offset)) + Math.random() * SPREAD;
  }

  // EventSource reconnects by itself after a broken stream, and after a refusal that the
  // service sends as a 200 event stream (an "error" event, then the end, then its retry).
  // Anything else that is not a 200 event stream (a proxy's 502 from before the service
  // said so) closes it for good: then this starts a new one, with backoff, resuming after
  // the last tick seen.
  // A stream's token first, when a key is in use; if the service will not give one, the
  // notice says why and this tries again later (the key may come back, or be changed).
  async function withToken(current, failures, open) {
    let tokenQuery = "";
    try {
      tokenQuery = await keys.streamQuery();
    } catch (refused) {
      if (!current.active) return;
      const wait = refused.retryAfter || backoff(failures + 1);
      showNotice(`${refused.message}; trying again in ${wait.toFixed(1)} s.`);
      let timer = null;
      const done = pending(current, () => clearTimeout(timer));
      timer = setTimeout(() => { done(); withToken(current, failures + 1, open); }, wait * 1000);
      return;
    }
    if (current.active) open(tokenQuery);
  }

  function sseLoop(current, failures = 0, lastId = "") {
    if (!current.active) return;
    withToken(current, failures, (tokenQuery) => openStream(current, failures, lastId, tokenQuery));
  }

  function openStream(current, failures, lastId, tokenQuery) {
    count("requests");
    const resume = lastId ? `&last_event_id=${encodeURIComponent(lastId)}` : "";
    const source = new EventSource(`/v1/prices/stream?${query}${resume}${tokenQuery}`);
    const closed = pending(current, () => source.close());
    let refused = false; // the stream just ended was a refusal: its notice stays
    source.onmessage = (event) => {
      failures = 0;
      refused = false;
      lastId = event.lastEventId || lastId;
      showNotice("");
      count("bytes", new TextEncoder().encode(event.data).length + event.lastEventId.length + 12);
      show(JSON.parse(event.data), now());
    };
    source.addEventListener("error", (event) => {
      if (!current.active) return;
      if (typeof event.data === "string") { // the server's "error" event: a refusal
        let refusal = {};
        try { refusal = JSON.parse(event.data); } catch (error) { /* shown as unknown */ }
        const status = refusal.status ? `HTTP ${refusal.status} ` : "";
        if (ApiKeyHolder.isTokenRefusal(refusal)) {
          // The browser would come back with the same URL, so the same token: this
          // stream ends here, and the next asks for a new token.
          showNotice(`The server refused the stream's token (${status}${refusal.error}): ` +
            `${refusal.message} Asking for a new one.`);
          keys.forgetToken();
          closed();
          let timer = null;
          const done = pending(current, () => clearTimeout(timer));
          timer = setTimeout(() => { done(); sseLoop(current, failures + 1, lastId); }, 500);
          return;
        }
        const wait = refusal.retry_after ? ` in about ${refusal.retry_after} s` : " later";
        showNotice(`The server refused the stream (${status}${refusal.error || "error"}); ` +
          `the browser will try again${wait}.`);
        refused = true;
        return;
      }
      count("reconnects");
      if (source.readyState === EventSource.CLOSED) {
        failures += 1;
        const wait = backoff(failures);
        showNotice(`The event stream failed; reconnecting in ${wait.toFixed(1)} s.`);
        closed();
        let timer = null;
        const done = pending(current, () => clearTimeout(timer));
        timer = setTimeout(() => { done(); sseLoop(current, failures, lastId); }, wait * 1000);
        return;
      }
      count("requests");
      if (!refused) showNotice("The event stream was interrupted; the browser is reconnecting.");
    });
  }

  function websocketLoop(current, failures = 0) {
    if (!current.active) return;
    withToken(current, failures, (tokenQuery) => openSocket(current, failures, tokenQuery));
  }

  function openSocket(current, failures, tokenQuery) {
    count("requests");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/v1/prices/ws?${query}${tokenQuery}`);
    const closed = pending(current, () => socket.close());
    let opened = false;
    socket.onopen = () => { opened = true; showNotice(""); };
    socket.onmessage = (event) => {
      count("bytes", new TextEncoder().encode(event.data).length);
      show(JSON.parse(event.data), now());
    };
    socket.onclose = () => {
      closed();
      if (!current.active) return;
      const next = opened ? 0 : failures + 1;
      const wait = backoff(next);
      count("reconnects");
      // A refused handshake is only a close to a page: if it carried a token, the next
      // attempt asks for a new one (and says so if the key itself is refused).
      if (!opened && tokenQuery) keys.forgetToken();
      showNotice(`The WebSocket closed; reconnecting in ${wait.toFixed(1)} s.`);
      setTimeout(() => websocketLoop(current, next), wait * 1000);
    };
  }

  function start(transport) {
    if (session) {
      session.active = false;
      session.abort.abort();
      for (const cancel of session.cancel) cancel();
    }
    resetCounters();
    showNotice("");
    const current = { active: true, cancel: new Set(), abort: new AbortController() };
    session = current;
    const url = new URL(location.href);
    url.searchParams.set("transport", transport);
    history.replaceState(null, "", url);
    if (transport === "sse") sseLoop(current);
    else if (transport === "websocket") websocketLoop(current);
    else httpLoop(current, transport === "long-poll");
  }

  async function loadHistory() {
    await Promise.all(symbols.map(async (symbol) => {
      try {
        const response = await fetch(`/v1/prices/${symbol}/history?limit=${HISTORY}`, { headers: keys.headers(), cache: "no-store" });
        if (response.status !== 200) return;
        const history = await response.json();
        for (const point of history.prices) plot(symbol, point.tick, point.price, point.updated_at);
        const newest = history.prices[history.prices.length - 1];
        last[symbol] = { ...newest, symbol, next_update_at: newest.updated_at + tickSeconds };
        const card = document.querySelector(`.quote[data-symbol="${symbol}"] .price`);
        card.textContent = `$${newest.price.toFixed(2)}`;
        card.dataset.tick = String(newest.tick);
      } catch (error) { /* the live transport will fill it in */ }
    }));
  }

  function tickClock() {
    const element = document.getElementById("next-tick");
    if (nextTickAt === null) return;
    const left = nextTickAt - (now() + offset);
    element.textContent = left > 0 ? `in ${left.toFixed(1)} s` : "now";
  }

  for (const card of document.querySelectorAll(".quote")) {
    makeChart(card.dataset.symbol, card.querySelector(".chart"));
    last[card.dataset.symbol] = undefined;
  }
  select.addEventListener("change", () => start(select.value));
  document.getElementById("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    keys.use(document.getElementById("api-key").value.trim());
    start(select.value); // the chosen transport again, with the key
  });
  setInterval(tickClock, 200);
  loadHistory().then(() => start(body.dataset.transport));
})();
