// Device page: one uPlot chart per telemetry metric. Drag across a chart to zoom (uPlot's own
// drag-to-zoom on x); "Reset zoom" or a double click shows the whole window again.
(function () {
  const source = document.getElementById("telemetry-data");
  if (!source || !window.uPlot) return;
  const series = JSON.parse(source.textContent);
  const charts = {};
  series.forEach(function (s, i) {
    const el = document.getElementById("tm-" + i);
    if (!el) return;
    const zoomed = function (u) {  // expose the visible span (tests, and screen-reader users)
      el.setAttribute("data-view-min", String(u.scales.x.min));
      el.setAttribute("data-view-max", String(u.scales.x.max));
    };
    const opts = {
      width: Math.max(320, el.clientWidth || 480), height: 200,
      scales: { x: { time: true } },
      cursor: { drag: { x: true, y: false, setScale: true } },
      series: [{}, { label: s.metric, stroke: "#0b4f9c", width: 1.5, points: { show: s.x.length < 60 } }],
      axes: [{}, {}],
      hooks: { setScale: [function (u, key) { if (key === "x") zoomed(u); }] },
    };
    const chart = new uPlot(opts, [s.x, s.y], el);
    const full = { min: s.x[0], max: s.x[s.x.length - 1] };
    charts[el.id] = { chart: chart, full: full };
    el.setAttribute("data-points", String(s.x.length));
    el.setAttribute("data-min", String(full.min));
    el.setAttribute("data-max", String(full.max));
    zoomed(chart);
  });
  document.querySelectorAll("button.reset-zoom").forEach(function (button) {
    button.addEventListener("click", function () {
      const entry = charts[button.getAttribute("data-chart")];
      if (entry) entry.chart.setScale("x", entry.full);
    });
  });
})();
