// Dashboard charts (uPlot): weekly downtime hours and self-resolution % with the target line.
(function () {
  const data = JSON.parse(document.getElementById("chart-data").textContent);
  const target = 100 * JSON.parse(document.getElementById("chart-target").textContent);
  const width = (el) => Math.max(320, el.clientWidth || 480);
  function chart(id, label, series, color, extra) {
    const el = document.getElementById(id);
    if (!el || !window.uPlot) return;
    const opts = {
      width: width(el), height: 240,
      scales: { x: { time: true } },
      series: [{}, { label: label, stroke: color, width: 2, fill: color + "22", points: { show: true } }].concat(extra || []),
      axes: [{}, { label: label }],
    };
    const values = [data.x, series].concat((extra || []).map(() => data.x.map(() => target)));
    el.setAttribute("data-points", String(data.x.length));
    return new uPlot(opts, values, el);
  }
  chart("chart-downtime", "hours", data.downtime_h, "#b3261e");
  chart("chart-selfres", "%", data.self_resolution_pct, "#1b7f3b",
        [{ label: "target", stroke: "#3d3d3d", dash: [6, 4], width: 1, points: { show: false } }]);
})();
