// The page's history: a range (live, 1 h, 24 h, 7 d), one chart comparing every symbol's
// % change over it, and each symbol's statistics with the correlations of their moves.
// Live charts the ticks the page receives (page.js says each with a "price-point"
// event); the other ranges chart candles from the history database. The statistics
// come from /v1/stats (the last hour when live). Both are fetched again each minute
// while the tab is visible, and a failure keeps what is shown, with a notice.
"use strict";

(() => {
  const body = document.body;
  const symbols = body.dataset.symbols.split(",");
  // Each range: the statistics window, and the candles that chart it (about 60-170).
  const RANGES = {
    live: { window: "1h" },
    "1h": { window: "1h", interval: "1m", seconds: 3600 },
    "24h": { window: "24h", interval: "15m", seconds: 86400 },
    "7d": { window: "7d", interval: "1h", seconds: 604800 },
  };
  const LIVE_POINTS = 60;
  const REFRESH_SECONDS = 60;
  const COLOURS = ["#1f6feb", "#d4a72c", "#1a7f37", "#cf222e", "#8250df", "#bf3989", "#0a7f8c", "#57606a"];
  const select = document.getElementById("range");
  const chartElement = document.getElementById("comparison");
  const legend = document.getElementById("comparison-legend");
  const notice = document.getElementById("history-notice");
  const live = new Map(); // updated_at -> {symbol: price}, the last LIVE_POINTS ticks
  let range = RANGES[select.value] ? select.value : "live";
  let asked = 0; // answers to an older choice of range are dropped
  let chart = null;

  function percent(value, digits = 2) {
    return value === null || value === undefined ? "–" : `${value >= 0 ? "+" : ""}${value.toFixed(digits)} %`;
  }

  function money(value) {
    return value === null ? "–" : `$${value.toFixed(2)}`;
  }

  function showNotice(text) {
    notice.textContent = text;
    notice.hidden = !text;
  }

  function makeChart() {
    chart = new uPlot({
      width: Math.max(280, chartElement.clientWidth),
      height: 240,
      legend: { show: false },
      scales: { x: { time: true } },
      axes: [{}, { size: 70, values: (u, values) => values.map((v) => `${v} %`) }],
      series: [{}, ...symbols.map((symbol, i) => ({
        label: symbol, stroke: COLOURS[i % COLOURS.length], width: 2, spanGaps: true,
      }))],
    }, [[], ...symbols.map(() => [])], chartElement);
  }

  // series: symbol -> [[time, price at its start, price at its end], ...] in time order.
  // Each symbol's % change from its first price, on the times of all of them.
  function compare(series) {
    const times = [...new Set(symbols.flatMap((s) => (series[s] || []).map((p) => p[0])))]
      .sort((a, b) => a - b);
    const columns = symbols.map((symbol) => {
      const points = series[symbol] || [];
      const at = new Map(points.map((p) => [p[0], p[2]]));
      const base = points.length ? points[0][1] : null;
      return times.map((t) => (at.has(t) && base ? (at.get(t) / base - 1) * 100 : null));
    });
    chart.setData([times, ...columns]);
    chartElement.dataset.points = String(times.length);
    chartElement.dataset.from = times.length ? String(times[0]) : "";
    chartElement.dataset.range = range;
    legend.replaceChildren(...symbols.map((symbol, i) => {
      const shown = columns[i].filter((v) => v !== null);
      const item = document.createElement("li");
      item.dataset.symbol = symbol;
      item.style.setProperty("--colour", COLOURS[i % COLOURS.length]);
      item.textContent = `${symbol} ${percent(shown.length ? shown[shown.length - 1] : null)}`;
      return item;
    }));
  }

  function compareLive() {
    const series = {};
    for (const [time, prices] of [...live.entries()].sort((a, b) => a[0] - b[0])) {
      for (const [symbol, price] of Object.entries(prices)) {
        (series[symbol] = series[symbol] || []).push([time, price, price]);
      }
    }
    compare(series);
  }

  document.addEventListener("price-point", (event) => {
    const { symbol, price, updatedAt } = event.detail;
    if (!live.has(updatedAt)) live.set(updatedAt, {});
    live.get(updatedAt)[symbol] = price;
    while (live.size > LIVE_POINTS) live.delete(Math.min(...live.keys()));
    if (range === "live") compareLive();
  });

  async function fetchJson(url) {
    const response = await fetch(url, { headers: pageKey.headers() }); // static/keys.js
    if (response.status !== 200) {
      let reason = `HTTP ${response.status}`;
      try { reason = (await response.json()).message || reason; } catch (error) { /* as is */ }
      throw new Error(reason);
    }
    return response.json();
  }

  async function loadCandles(chosen, ask) {
    const from = Math.floor(Date.now() / 1000) - chosen.seconds;
    const answers = await Promise.all(symbols.map((symbol) =>
      fetchJson(`/v1/prices/${symbol}/candles?interval=${chosen.interval}&from=${from}`)));
    if (ask !== asked) return;
    const series = {};
    answers.forEach((answer, i) => {
      series[symbols[i]] = answer.candles.map((c) => [c.start, c.open, c.close]);
    });
    compare(series);
  }

  function cell(text) {
    const element = document.createElement("td");
    element.textContent = text;
    return element;
  }

  async function loadStats(chosen, ask) {
    const stats = await fetchJson(`/v1/stats?window=${chosen.window}&symbols=${symbols.join(",")}`);
    if (ask !== asked) return;
    const rows = symbols.map((symbol) => {
      const s = stats.symbols[symbol];
      const row = document.createElement("tr");
      row.dataset.symbol = symbol;
      const name = document.createElement("th");
      name.scope = "row";
      name.textContent = symbol;
      row.append(name, cell(money(s.first)), cell(money(s.last)), cell(percent(s.change_pct)),
        cell(money(s.min)), cell(money(s.max)), cell(money(s.mean)),
        cell(s.volatility === null ? "–" : `${(s.volatility * 100).toFixed(3)} %`),
        cell(String(s.ticks)));
      return row;
    });
    document.querySelector("#stats tbody").replaceChildren(...rows);
    const header = document.querySelector("#correlation thead tr");
    header.replaceChildren(document.createElement("td"), ...symbols.map((symbol) => {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = symbol;
      return th;
    }));
    document.querySelector("#correlation tbody").replaceChildren(...symbols.map((x) => {
      const row = document.createElement("tr");
      row.dataset.symbol = x;
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = x;
      const r = (y) => stats.correlation[x][y];
      row.append(th, ...symbols.map((y) => cell(r(y) === null ? "–" : r(y).toFixed(2))));
      return row;
    }));
    document.getElementById("stats-window").textContent = chosen.window;
    document.getElementById("stats").dataset.window = chosen.window;
  }

  async function load() {
    const ask = ++asked;
    const chosen = RANGES[range];
    try {
      await Promise.all([
        chosen.interval ? loadCandles(chosen, ask) : compareLive(),
        loadStats(chosen, ask),
      ]);
      if (ask === asked) showNotice("");
    } catch (error) {
      if (ask === asked) showNotice(`The history could not be loaded (${error.message}); trying again in a minute.`);
    }
  }

  function choose(name) {
    range = RANGES[name] ? name : "live";
    const url = new URL(location.href);
    url.searchParams.set("range", range);
    history.replaceState(null, "", url);
    load();
  }

  makeChart();
  select.addEventListener("change", () => choose(select.value));
  setInterval(() => { if (!document.hidden) load(); }, REFRESH_SECONDS * 1000);
  load();
})();
