// Draws the report's plots as SVG from the JSON in #data (no external libraries).
const data = JSON.parse(document.getElementById("data").textContent);
const NS = "http://www.w3.org/2000/svg";
const COLORS = ["#1f77b4","#d62728","#2ca02c","#9467bd","#ff7f0e","#8c564b","#e377c2","#17becf"];
function el(name, attrs, parent) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}
function lineChart(host, guard) {
  const W = 900, H = 280, L = 60, B = 30, T = 10, R = 180;
  const svg = el("svg", {width: W, height: H, class: "plot", "data-guard": guard.guard}, host);
  const xs = guard.series.flatMap(s => s.points.map(p => p[0])).concat(data.commands.map(c => c.ts));
  const ys = guard.series.flatMap(s => s.points.map(p => p[1]));
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || x0 + 1;
  const y0 = Math.min(0, ...ys), y1 = Math.max(...ys) || y0 + 1;
  const sx = x => L + (x - x0) / ((x1 - x0) || 1) * (W - L - R);
  const sy = y => H - B - (y - y0) / ((y1 - y0) || 1) * (H - B - T);
  el("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999"}, svg);
  el("line", {x1: L, y1: T, x2: L, y2: H - B, stroke: "#999"}, svg);
  el("text", {x: 4, y: T + 10, "font-size": 11}, svg).textContent = y1.toPrecision(3);
  el("text", {x: 4, y: H - B, "font-size": 11}, svg).textContent = y0.toPrecision(3);
  guard.series.forEach((s, i) => {
    const d = s.points.map((p, j) => (j ? "L" : "M") + sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1)).join(" ");
    el("path", {d: d, fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 1.5, class: "series", "data-slice": s.slice}, svg);
    el("text", {x: W - R + 8, y: T + 14 * (i + 1), "font-size": 11, fill: COLORS[i % COLORS.length]}, svg).textContent = s.slice;
  });
  data.commands.forEach(c => {
    el("line", {x1: sx(c.ts), x2: sx(c.ts), y1: T, y2: H - B, stroke: c.action === "rollback" ? "#d62728" : "#ff7f0e", "stroke-dasharray": "4 3", class: "command"}, svg);
  });
}
function barChart(host, rows) {
  const W = 900, rowH = 18, L = 260, H = rows.length * rowH * 2 + 20;
  const svg = el("svg", {width: W, height: H, class: "plot mix"}, host);
  const top = Math.max(...rows.flatMap(r => [r.canary, r.baseline]), 1e-9);
  rows.forEach((r, i) => {
    const y = 10 + i * rowH * 2;
    el("text", {x: 4, y: y + rowH, "font-size": 11}, svg).textContent = r.slice;
    el("rect", {x: L, y: y, width: (W - L - 20) * r.canary / top, height: rowH - 3, fill: "#d62728", class: "bar canary"}, svg);
    el("rect", {x: L, y: y + rowH - 2, width: (W - L - 20) * r.baseline / top, height: rowH - 3, fill: "#1f77b4", class: "bar baseline"}, svg);
  });
}
for (const guard of data.guards) {
  const section = document.createElement("section");
  section.innerHTML = "<h2></h2>";
  section.querySelector("h2").textContent = guard.guard + ": " + guard.statistic + " per slice";
  document.getElementById("plots").appendChild(section);
  lineChart(section, guard);
}
for (const chart of data.concentration) {
  const section = document.createElement("section");
  section.innerHTML = "<h2></h2>";
  section.querySelector("h2").textContent = "Concentration of item exposure (" + chart.statistic + "): canary vs baseline";
  document.getElementById("plots").appendChild(section);
  lineChart(section, chart);
}
if (data.mix.length) {
  const section = document.createElement("section");
  section.innerHTML = "<h2>Canary (red) vs baseline (blue) slice mix, latest window</h2>";
  document.getElementById("plots").appendChild(section);
  barChart(section, data.mix);
}
document.body.setAttribute("data-rendered", String(document.querySelectorAll("svg.plot").length));
