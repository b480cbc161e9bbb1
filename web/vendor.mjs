// Copy the built front-end files into the server's static folder (committed; no CDN at run time).
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";

const out = "../server/web/static/vendor";
const files = [
  ["node_modules/htmx.org/dist/htmx.min.js", "htmx.min.js"],
  ["node_modules/htmx.org/LICENSE", "htmx.LICENSE.txt"],
  ["node_modules/uplot/dist/uPlot.iife.min.js", "uPlot.iife.min.js"],
  ["node_modules/uplot/dist/uPlot.min.css", "uPlot.min.css"],
  ["node_modules/uplot/LICENSE", "uPlot.LICENSE.txt"],
];
mkdirSync(out, { recursive: true });
for (const [from, to] of files) copyFileSync(from, `${out}/${to}`);
const versions = ["htmx.org", "uplot"].map(
  (name) => `${name} ${JSON.parse(readFileSync(`node_modules/${name}/package.json`)).version}`,
);
console.log(`copied ${files.length} files to ${out}: ${versions.join(", ")}`);
