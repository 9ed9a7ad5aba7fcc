#!/usr/bin/env bash
# Runs every benchmark workload against roomcast and its peers (centrifuge,
# gorilla hub, melody; bin/load's default -impls), in one
# run, on loopback. Results: results/latest.jsonl (one JSON line per run) and
# results/latest.txt (the tables). See BENCHMARKS.md.
#
#   bench/run.sh            # all workloads (about 10 minutes on 2 cores)
#   bench/run.sh A C        # only some
#   bench/run.sh cluster    # 3-instance roomcast cluster, 45,000 connections (~3 minutes; not in the default list)
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p results bin
go build -o bin/server ./server
go build -o bin/load ./load
out=results/latest
if [ $# -eq 0 ]; then set -- A A-sse B C D-rooms D-users; : > $out.jsonl; : > $out.txt; fi
{
  echo "# $(date -u +%FT%TZ) $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(go version | cut -d' ' -f3), $(uname -r)"
  for w in "$@"; do
    common=(-server bin/server -json $out.jsonl -label "$w" -timeout 60s)
    case $w in
      A)       bin/load "${common[@]}" -conns 10000 -n 100 -size 64 -bursts 5 ;;
      A-sse)   bin/load "${common[@]}" -impls roomcast,centrifuge -transport sse -conns 10000 -n 100 -size 64 -bursts 5 ;;
      B)       bin/load "${common[@]}" -conns 19500 -n 1 -size 64 -bursts 10 -pause 1s ;;
      C)       bin/load "${common[@]}" -conns 1000 -n 100 -interval 100ms -size 64 -bursts 1 ;;
      D-rooms) bin/load "${common[@]}" -conns 10000 -rooms 1000 -n 20000 -size 64 -bursts 3 ;;
      D-users) bin/load "${common[@]}" -conns 10000 -users 10000 -target user -n 20000 -size 64 -bursts 3 ;;
      # 15,000 connections per instance, each instance and its subscribers in their own processes;
      # single-instance baseline, then the 3-node cluster, twice (paired ratios: the machine is noisy).
      cluster) bin/load "${common[@]}" -instances 1,3,1,3 -conns 15000 -n 20 -size 64 -bursts 5 -pause 1s ;;
      *) echo "unknown workload $w" >&2; exit 2 ;;
    esac
  done
} 2>&1 | tee -a $out.txt
