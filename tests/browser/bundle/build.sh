#!/usr/bin/env bash
# Rebuild tests/browser/vendor/openfeature-web.js from the pinned npm packages (package-lock.json).
# Run by hand when the pins change; the tests use the committed bundle and never reach npm.
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp package.json package-lock.json entry.js "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --silent)
vendor=../vendor
{
  echo "// Bundled for Flagport's browser tests only, by tests/browser/bundle/build.sh (esbuild)."
  echo "// Packages (Apache-2.0; licences in tests/browser/vendor/licenses/):"
  for package in web-sdk core ofrep-web-provider ofrep-core; do
    node -e "const p=require('$work/node_modules/@openfeature/$package/package.json');console.log('//   '+p.name+' '+p.version)"
  done
} > "$vendor/openfeature-web.js"
"$work/node_modules/.bin/esbuild" "$work/entry.js" --bundle --format=iife --target=es2020 \
  --minify --legal-comments=none --log-level=warning >> "$vendor/openfeature-web.js"
mkdir -p "$vendor/licenses"
for package in web-sdk core ofrep-web-provider ofrep-core; do
  cp "$work/node_modules/@openfeature/$package/LICENSE" "$vendor/licenses/openfeature-$package.LICENSE"
done
