#!/usr/bin/env bash
# Tests the browser client as the npm package @roomcast/client, the way its
# users get it: packs it (npm pack) and checks the tarball holds the browser
# files only; installs that tarball in a throwaway Vite app whose tools are
# pinned by client/test/package-lock.json (npm ci); type-checks a typed usage
# file and the React and Vue examples with tsc --strict; bundles the app with
# vite build; runs the unit tests (node --test); imports the package in plain
# Node as a server render would; and measures its size with esbuild --minify
# and gzip -9 (budget: 4096 bytes). The repository's ./test.sh runs it.
#
# Nothing is installed in the repository: the app lives in a temporary folder
# (node_modules must stay out of the Go module's tree), npm's cache keeps
# reinstalls quick.
set -euo pipefail
cd "$(dirname "$0")"
client=$PWD
budget=4096
start=$SECONDS
step() { printf '\nclient/test.sh [%3d s]: %s\n' $((SECONDS - start)) "$*"; }

for tool in node npm gzip; do
  command -v "$tool" >/dev/null || { echo "client/test.sh: $tool is missing (Node.js 20.19+ with npm 10+ are needed)" >&2; exit 1; }
done
echo "client/test.sh: node $(node --version), npm $(npm --version)"

work=$(mktemp -d "${TMPDIR:-/tmp}/roomcast-client.XXXXXX")
trap 'rm -rf "$work"' EXIT

# expect_files TARBALL_JSON: the tarball is exactly these files.
expect_files() {
  node -e '
    const [{ filename, files, size, unpackedSize }] = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const got = files.map((f) => f.path).sort();
    const want = ["README.md", "client.d.ts", "client.js", "package.json"];
    console.log(`  ${filename}: ${size} B packed, ${unpackedSize} B unpacked: ${got.join(", ")}`);
    if (got.join() !== want.join()) {
      console.error(`client/test.sh: the tarball holds ${got.join(", ")}; want exactly ${want.join(", ")}`);
      process.exit(1);
    }' "$1"
}

step "npm pack, and the tarball's file list"
npm pack --silent --json --pack-destination "$work" >"$work/pack.json"
expect_files "$work/pack.json"
tarball=$work/$(node -p 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))[0].filename' "$work/pack.json")

step "npm pack of a copy with Go files and tests beside it (the Go client package lives in client/ too): still only the browser files"
mkdir -p "$work/decoy/test" "$work/decoy/internal"
cp package.json client.js client.d.ts README.md "$work/decoy/"
touch "$work/decoy/client.go" "$work/decoy/client_test.go" "$work/decoy/go.mod" "$work/decoy/test/unit.test.mjs" "$work/decoy/internal/x.go" "$work/decoy/test.sh"
(cd "$work/decoy" && npm pack --silent --json --dry-run >"$work/decoy.json")
expect_files "$work/decoy.json"

step "a throwaway Vite app: npm ci with the pinned tools (client/test/package-lock.json), then the tarball"
app=$work/app
mkdir -p "$app/examples"
(cd test && tar --exclude=node_modules --exclude=dist -cf - .) | (cd "$app" && tar -xf -)
cp -R ../examples/react ../examples/vue "$app/examples/"
cd "$app"
npm ci --no-audit --no-fund --loglevel=error
npm install --no-save --no-audit --no-fund --loglevel=error "$tarball"
node -e 'const p = require("@roomcast/client/package.json"); console.log(`  installed ${p.name}@${p.version}`)'
bin=$app/node_modules/.bin
echo "  typescript $("$bin/tsc" --version | cut -d' ' -f2), vite $("$bin/vite" --version | cut -d' ' -f1 | cut -d/ -f2), esbuild $("$bin/esbuild" --version)"

step "tsc --noEmit --strict, bundler resolution: typed.ts (with its @ts-expect-error lines), the app, examples/react and examples/vue"
"$bin/tsc" -p tsconfig.json --noEmit --strict
step "tsc --noEmit --strict, NodeNext resolution: typed.ts"
"$bin/tsc" -p tsconfig.node.json --noEmit --strict

step "vite build of an app importing \"@roomcast/client\""
"$bin/vite" build --logLevel warn
bundle=$(cat dist/assets/*.js)
for s in last_event_id unsupported_protocol Roomcast-Error "roomcast: connection closed"; do
  grep -qF "$s" <<<"$bundle" || { echo "client/test.sh: the bundle does not contain the client (no \"$s\")" >&2; exit 1; }
done
echo "  dist/assets: $(wc -c <<<"$bundle") B, the client included"

step "node --test: frame parsing, backoff and jitter, resume ids, URLs (unit tests with stand-ins for WebSocket and EventSource)"
node --test --test-reporter=spec unit.test.mjs

step "SSR: import \"@roomcast/client\" in Node with no browser globals; connect(\"/live\") throws a clear Error"
node --input-type=module -e '
  const names = ["window", "self", "document", "location", "navigator", "WebSocket", "EventSource", "fetch", "XMLHttpRequest", "localStorage"];
  const saved = new Map(names.map((n) => [n, Object.getOwnPropertyDescriptor(globalThis, n)]));
  for (const n of names) Object.defineProperty(globalThis, n, { configurable: true, get() { throw new Error(`the module touched ${n} at import`); } });
  const mod = await import("@roomcast/client");
  for (const [n, d] of saved) d ? Object.defineProperty(globalThis, n, d) : delete globalThis[n];
  if (typeof mod.connect !== "function" || typeof window !== "undefined" || typeof location !== "undefined") throw new Error("unexpected environment");
  try {
    mod.connect("/live");
  } catch (e) {
    if (e instanceof ReferenceError || !/outside a browser needs an absolute URL/.test(e.message)) throw e;
    console.log(`  imported without touching ${names.join(", ")}; connect("/live") threw: ${e.message}`);
    process.exit(0);
  }
  throw new Error("connect(\"/live\") did not throw outside a browser");
'

step "size: esbuild --minify, gzip -9 (budget $budget B)"
js=node_modules/@roomcast/client/client.js
"$bin/esbuild" --minify --log-level=warning "$js" >"$work/client.min.js"
raw=$(wc -c <"$js")
min=$(wc -c <"$work/client.min.js")
gz=$(gzip -9 -c "$work/client.min.js" | wc -c)
echo "  client.js: $raw B raw, $min B minified, $gz B minified and gzipped"
if [ "$gz" -gt "$budget" ]; then
  echo "client/test.sh: client.js is $gz B minified and gzipped, over the budget of $budget B" >&2
  exit 1
fi

echo
echo "client/test.sh: all passed in $((SECONDS - start)) s"
