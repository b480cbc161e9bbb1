// Dashboard charts. The tiles come with the page; each chart's data is its own request
// (/dashboard/charts/{weekly,models,fault_codes}, the KPI report with one grouping each), all
// fetched at once so the server computes them in parallel — once the page has loaded, so the
// tiles and the page's own files never wait behind the charts' reports. uPlot draws the weekly
// series; the top lists are plain HTML bars (readable without a canvas).
(function () {
  const box = document.getElementById("charts");
  if (!box) return;
  const target = 100 * Number(box.getAttribute("data-target"));
  const width = (el) => Math.max(320, el.clientWidth || 480);
  const CHANNELS = [["auto", "#1b7f3b"], ["customer", "#3a5dae"], ["remote", "#6b3fa0"], ["field", "#b36b00"]];

  function line(id, label, xs, ys, color, extra) {
    const el = document.getElementById(id);
    const opts = {
      width: width(el), height: 240,
      scales: { x: { time: true } },
      series: [{}, { label: label, stroke: color, width: 2, fill: color + "22", points: { show: true } }].concat(extra || []),
      axes: [{}, { label: label }],
    };
    const values = [xs, ys].concat((extra || []).map(() => xs.map(() => target)));
    el.setAttribute("data-points", String(xs.length));
    return new uPlot(opts, values, el);
  }

  // Stacked bars: each channel is drawn as the running sum of the channels before it, largest
  // first, so the visible part of each bar is that channel; the legend shows the channel's own count.
  function stacked(id, data) {
    const el = document.getElementById(id);
    const sums = [];
    let running = data.x.map(() => 0);
    CHANNELS.forEach(([name]) => { running = running.map((v, i) => v + (data[name][i] || 0)); sums.push(running); });
    const bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.6, 60] }) : undefined;
    const series = [{}], values = [data.x];
    for (let k = CHANNELS.length - 1; k >= 0; k--) {
      const [name, color] = CHANNELS[k];
      series.push({ label: name, stroke: color, fill: color, width: 1, paths: bars, points: { show: false },
                    value: (u, v, si, i) => (i == null ? "—" : String(data[name][i] || 0)) });
      values.push(sums[k]);
    }
    el.setAttribute("data-points", String(data.x.length));
    el.setAttribute("data-totals", JSON.stringify(sums[sums.length - 1]));
    return new uPlot({ width: width(el), height: 240, scales: { x: { time: true } }, series: series,
                       axes: [{}, { label: "incidents" }] }, values, el);
  }

  function top(id, data) {
    const list = document.getElementById(id);
    list.textContent = "";
    const most = Math.max.apply(null, data.hours.concat([0]));
    data.labels.forEach((label, i) => {
      const item = document.createElement("li");
      item.setAttribute("data-label", label);
      item.setAttribute("data-hours", String(data.hours[i]));
      const name = document.createElement("span"); name.className = "bar-label"; name.textContent = label;
      const bar = document.createElement("span"); bar.className = "bar";
      bar.style.width = (most > 0 ? (100 * data.hours[i]) / most : 0) + "%";
      const value = document.createElement("span"); value.className = "bar-value"; value.textContent = data.hours[i].toFixed(1) + " h";
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
        if (!window.uPlot) throw new Error("uPlot did not load");
        line("chart-downtime", "hours", data.x, data.downtime_h, "#b3261e");
        line("chart-selfres", "%", data.x, data.self_resolution_pct, "#1b7f3b",
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
