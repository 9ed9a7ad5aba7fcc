#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what the tests
# need (Debian's chromium for the browser tests, nginx for the host-stack
# matrix, iptables for the route partition), tests the browser client as its
# npm package (client/test.sh, with the machine's Node.js and npm), then runs
# the Go tests with the race detector. CI runs exactly this (as root: the
# fault tests mount a tmpfs and cut routes with iptables).
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing+=(iptables) # the route-partition test
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

bash client/test.sh         # the browser client as the npm package @roomcast/client (node and npm: on the machine)
go vet ./...
(cd bench && go vet ./...)  # the benchmark harness, a module of its own, must keep building
(cd compat && go vet ./...) # the host-stack matrix, a module of its own (its routers are its dependencies only)
go test -race -count=1 ./...
(cd compat && go test -race -count=1 ./...)
