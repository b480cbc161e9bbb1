// The console's one rule for durations (server/web/rendering.py `duration`, the same steps and
// the same rounding, so a chart's legend and the tile beside it say the same): three significant
// digits in the largest unit reached of s, min (under an hour), h (under two days), d.
(function () {
  const UNITS = [[60, 1, "s"], [3600, 60, "min"], [48 * 3600, 3600, "h"], [Infinity, 86400, "d"]];

  // floor(x * 10^d + 0.5): the same double arithmetic as the Python, hence the same digits.
  function significant(value, digits) {
    if (value === 0) return "0";
    const places = Math.max(0, (digits || 3) - 1 - Math.floor(Math.log10(value)));
    const scale = Math.pow(10, places);
    const scaled = Math.floor(value * scale + 0.5);
    const whole = Math.floor(scaled / scale), frac = scaled - whole * scale;
    let text = whole.toLocaleString("en-US");
    if (places) {
      const decimals = String(frac).padStart(places, "0").replace(/0+$/, "");
      if (decimals) text += "." + decimals;
    }
    return text;
  }

  function unitOf(seconds) {
    const value = Math.abs(seconds);
    for (const [below, divisor, unit] of UNITS) if (value < below) return { divisor: divisor, unit: unit };
    return { divisor: 86400, unit: "d" };
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
    const sign = seconds < 0 ? "-" : "", value = Math.abs(seconds), u = unitOf(value);
    return sign + significant(value / u.divisor) + " " + u.unit;
  }

  window.fleetcareFormat = { duration: duration, significant: significant, unitOf: unitOf };
})();
