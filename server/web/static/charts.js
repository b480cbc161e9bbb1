// Dashboard charts. The tiles come with the page; each chart's data is its own request
// (/dashboard/charts/{weekly,models,fault_codes}, the KPI report with one grouping each), all
// fetched at once so the server computes them in parallel — once the page has loaded, so the
// tiles and the page's own files never wait behind the charts' reports. uPlot draws the weekly
// series (totals as bars, rates as steps, the axis over the period); the top lists are plain HTML bars (readable without a canvas).
(function () {
  const box = document.getElementById("charts");
  if (!box) return;
  const target = 100 * Number(box.getAttribute("data-target"));
  const width = (el) => Math.max(320, el.clientWidth || 480);
  const CHANNELS = [["auto", "#1b7f3b"], ["customer", "#3a5dae"], ["remote", "#6b3fa0"], ["field", "#b36b00"]];

  const fmt = window.fleetcareFormat;
  const WEEK_PAD = 0.02;  // of the period, either side of the time axis

  // Every chart's time axis spans the report's period (data.span = [from, until]) with a little
  // padding, whatever the number of points: uPlot alone widens one point to years.
  function xRange(span) {
    const pad = Math.max(3600, WEEK_PAD * (span[1] - span[0]));
    return [span[0] - pad, span[1] + pad];
  }

  function bars() { return uPlot.paths.bars({ size: [0.8, Infinity], align: 0 }); }

  // What was drawn, for tests and screen-reader users: the style, and the x scale once set.
  function exposing(el, style) {
    el.setAttribute("data-style", style);
    const set = (u) => {
      el.setAttribute("data-x-min", String(u.scales.x.min));
      el.setAttribute("data-x-max", String(u.scales.x.max));
    };
    return { ready: [set], setScale: [(u, key) => { if (key === "x") set(u); }] };
  }

  // A period total per week (downtime) is a bar over its week, never an interpolated line.
  // Values in seconds; the axis in the unit of the largest week, legend by the duration rule.
  function totals(id, data, seconds, color) {
    const el = document.getElementById(id);
    const most = Math.max.apply(null, seconds.map((v) => v || 0).concat([0]));
    const unit = fmt.unitOf(most || 3600);
    const values = seconds.map((v) => (v == null ? null : v / unit.divisor));
    const opts = {
      width: width(el), height: 240,
      scales: { x: { time: true, range: () => xRange(data.span) }, y: { range: (u, lo, hi) => [0, Math.max(hi, 1e-9) * 1.1] } },
      series: [{}, { label: "downtime", stroke: color, fill: color + "99", width: 1, paths: bars(), points: { show: false },
                     value: (u, v, si, i) => (i == null ? "—" : fmt.duration(seconds[i])) }],
      axes: [{}, { label: unit.unit, values: (u, ticks) => ticks.map((t) => fmt.significant(Math.abs(t)) ) }],
    };
    el.setAttribute("data-points", String(data.x.length));
    el.setAttribute("data-labels", JSON.stringify(seconds.map((v) => fmt.duration(v))));
    opts.hooks = exposing(el, "bars");
    return new uPlot(opts, [data.x, values], el);
  }

  // A rate per week: a step over each week (the week's value holds for the week), points shown.
  function rate(id, label, data, ys, color, extra) {
    const el = document.getElementById(id);
    const xs = data.from.concat(data.to.length ? [data.to[data.to.length - 1]] : []);
    const padded = ys.concat(ys.length ? [ys[ys.length - 1]] : []);
    const opts = {
      width: width(el), height: 240,
      scales: { x: { time: true, range: () => xRange(data.span) } },
      series: [{}, { label: label, stroke: color, width: 2, fill: color + "22", paths: uPlot.paths.stepped({ align: 1 }), points: { show: true } }].concat(extra || []),
      axes: [{}, { label: label }],
    };
    const values = [xs, padded].concat((extra || []).map(() => xs.map(() => target)));
    el.setAttribute("data-points", String(data.x.length));
    opts.hooks = exposing(el, "steps");
    return new uPlot(opts, values, el);
  }

  // Stacked bars: each channel is drawn as the running sum of the channels before it, largest
  // first, so the visible part of each bar is that channel; the legend shows the channel's own count.
  function stacked(id, data) {
    const el = document.getElementById(id);
    const sums = [];
    let running = data.x.map(() => 0);
    CHANNELS.forEach(([name]) => { running = running.map((v, i) => v + (data[name][i] || 0)); sums.push(running); });
    const series = [{}], values = [data.x];
    for (let k = CHANNELS.length - 1; k >= 0; k--) {
      const [name, color] = CHANNELS[k];
      series.push({ label: name, stroke: color, fill: color, width: 1, paths: bars(), points: { show: false },
                    value: (u, v, si, i) => (i == null ? "—" : String(data[name][i] || 0)) });
      values.push(sums[k]);
    }
    el.setAttribute("data-points", String(data.x.length));
    el.setAttribute("data-totals", JSON.stringify(sums[sums.length - 1]));
    return new uPlot({ width: width(el), height: 240, scales: { x: { time: true, range: () => xRange(data.span) } }, series: series,
                       axes: [{}, { label: "incidents" }], hooks: exposing(el, "bars") }, values, el);
  }

  function top(id, data) {
    const list = document.getElementById(id);
    list.textContent = "";
    const most = Math.max.apply(null, data.seconds.concat([0]));
    data.labels.forEach((label, i) => {
      const item = document.createElement("li");
      item.setAttribute("data-label", label);
      item.setAttribute("data-hours", String(data.hours[i]));
      item.setAttribute("data-seconds", String(data.seconds[i]));
      const name = document.createElement("span"); name.className = "bar-label"; name.textContent = label;
      const bar = document.createElement("span"); bar.className = "bar";
      bar.style.width = (most > 0 ? (100 * data.seconds[i]) / most : 0) + "%";
      const value = document.createElement("span"); value.className = "bar-value"; value.textContent = fmt.duration(data.seconds[i]);
      item.append(name, bar, value);
      list.append(item);
    });
    if (!data.labels.length) { const none = document.createElement("li"); none.textContent = "No downtime in the period."; list.append(none); }
    list.setAttribute("data-count", String(data.labels.length));
  }

  function failed(id, message) {
    const el = document.getElementById(id);
    el.textContent = "Could not load this chart: " + message;
    el.classList.add("error");
  }

  async function load(name) {
    const answer = await fetch(box.getAttribute("data-src-" + name), { headers: { Accept: "application/json" }, credentials: "same-origin" });
    const body = (answer.headers.get("content-type") || "").includes("json") ? await answer.json() : null;
    if (!answer.ok || body === null) throw new Error(body && body.detail ? body.detail : "HTTP " + answer.status + " (signed out?)");
    return body;
  }

  function drawAll() {
    const jobs = [
      load("weekly").then((data) => {
        if (!window.uPlot || !fmt) throw new Error("uPlot did not load");
        totals("chart-downtime", data, data.downtime_s, "#b3261e");
        rate("chart-selfres", "%", data, data.self_resolution_pct, "#1b7f3b",
             [{ label: "target", stroke: "#3d3d3d", dash: [6, 4], width: 1, points: { show: false } }]);
        stacked("chart-channels", data);
      }).catch((e) => ["chart-downtime", "chart-selfres", "chart-channels"].forEach((id) => failed(id, e.message))),
      load("models").then((data) => top("top-models", data)).catch((e) => failed("top-models", e.message)),
      load("fault-codes").then((data) => top("top-fault-codes", data)).catch((e) => failed("top-fault-codes", e.message)),
    ];
    Promise.all(jobs).then(() => {
      box.setAttribute("aria-busy", "false");
      box.setAttribute("data-drawn", "true");
      window.__chartsDrawnAt = performance.now();  // benchmarks/web_pages.py: time until every chart is drawn
    });
  }

  if (document.readyState === "complete") drawAll();
  else window.addEventListener("load", drawAll, { once: true });
})();
