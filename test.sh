#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what the tests
# need (Debian's chromium, for the browser tests), then runs them all with
# the race detector. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v chromium >/dev/null 2>&1; then
  echo "test.sh: installing chromium (browser tests)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

go vet ./...
(cd bench && go vet ./...) # the benchmark harness, a module of its own, must keep building
go test -race -count=1 ./...
