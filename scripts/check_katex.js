// Check that every formula of the built site renders with the bundled KaTeX (part of `make docs`).
// Usage: node scripts/check_katex.js site
// pymdownx.arithmatex (generic mode) leaves each formula as \( \) or \[ \] inside an element of
// class "arithmatex"; the browser renders them with docs/assets/katex. A formula KaTeX cannot
// parse would show as red source text, so here it fails the build instead.
"use strict";
const fs = require("fs");
const path = require("path");
const katex = require(path.join(__dirname, "..", "docs", "assets", "katex", "katex.min.js"));

const root = process.argv[2] || "site";
const entities = { "&lt;": "<", "&gt;": ">", "&amp;": "&", "&quot;": '"', "&#39;": "'" };
const unescape = (s) => s.replace(/&(lt|gt|amp|quot|#39);/g, (m) => entities[m]);

function* htmlFiles(dir) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) yield* htmlFiles(full);
    else if (entry.name.endsWith(".html")) yield full;
  }
}

let formulas = 0;
const failures = [];
const pattern = /<(span|div) class="arithmatex">([\s\S]*?)<\/\1>/g;
for (const file of htmlFiles(root)) {
  const text = fs.readFileSync(file, "utf8");
  for (const match of text.matchAll(pattern)) {
    let tex = unescape(match[2]).trim();
    const display = tex.startsWith("\\[");
    if (display || tex.startsWith("\\(")) tex = tex.slice(2, -2);
    formulas += 1;
    try {
      katex.renderToString(tex, { displayMode: display, throwOnError: true });
    } catch (err) {
      failures.push(`${path.relative(root, file)}: ${err.message}\n    ${tex}`);
    }
  }
}
if (failures.length) {
  console.error(`KaTeX cannot render ${failures.length} of ${formulas} formulas:`);
  for (const f of failures) console.error("  " + f);
  process.exit(1);
}
console.log(`KaTeX renders all ${formulas} formulas of ${root}/`);
