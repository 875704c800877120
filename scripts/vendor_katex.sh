#!/usr/bin/env bash
# Refresh the KaTeX copy under docs/assets/katex/ (the docs site renders math with it, offline).
# Usage: scripts/vendor_katex.sh [version]   (needs npm; default version 0.16)
# Keeps katex.min.js, katex.min.css, the woff2 fonts and the licence;
# the CSS is rewritten to reference the woff2 fonts only (every current browser reads woff2).
set -euo pipefail
version="${1:-0.16}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/docs/assets/katex"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "katex@$version" > /dev/null && tar xzf katex-*.tgz)
rm -rf "$dest"
mkdir -p "$dest/fonts"
cp "$tmp/package/dist/katex.min.js" "$dest/"
cp "$tmp/package/dist/fonts/"*.woff2 "$dest/fonts/"
cp "$tmp/package/LICENSE" "$dest/LICENSE"
sed -E 's/,url\(fonts\/[A-Za-z0-9_-]+\.woff\) format\("woff"\),url\(fonts\/[A-Za-z0-9_-]+\.ttf\) format\("truetype"\)//g' \
    "$tmp/package/dist/katex.min.css" > "$dest/katex.min.css"
node -e "console.log(require('$tmp/package/package.json').version)" > "$dest/VERSION" 2>/dev/null \
    || python3 -c "import json,sys; print(json.load(open('$tmp/package/package.json'))['version'])" > "$dest/VERSION"
echo "KaTeX $(cat "$dest/VERSION") in $dest ($(du -sh "$dest" | cut -f1))"
