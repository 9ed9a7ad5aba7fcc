#!/usr/bin/env bash
# Runs every benchmark workload against roomcast and its peers (centrifuge,
# gorilla hub, melody; bin/load's default -impls), in one
# run, on loopback. Results: results/latest.jsonl (one JSON line per run) and
# results/latest.txt (the tables). See BENCHMARKS.md.
#
#   bench/run.sh            # all workloads (about 30 minutes on 2 cores)
#   bench/run.sh A C        # only some
#   bench/run.sh cluster    # 3-instance roomcast cluster, 45,000 connections (~3 minutes; not in the default list)
#   bench/run.sh paced      # latency at equal paced rates, 10,000 subscribers in 100 rooms (up to ~10 minutes; opt-in)
#   bench/run.sh scale      # deliveries/s at 5,000…19,500 connections in one room (~6 minutes; opt-in)
#   bench/run.sh paced-19500  # paced latency at 19,500 connections in one room, roomcast and Centrifuge (~3 minutes; opt-in)
#   bench/run.sh plot       # SVGs from results/latest.jsonl: results/paced-p99.svg, results/scale-deliveries.svg
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p results bin
go build -o bin/server ./server
go build -o bin/load ./load
go build -o bin/plot ./plot
out=results/latest
if [ $# -eq 0 ]; then set -- A A-sse B C D-rooms D-users D-users-10 D-tabs; : > $out.jsonl; : > $out.txt; fi
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
      # Per user with more to say: 10 messages to each of 10,000 users per burst, and 1,000 users
      # with 10 connections (tabs, devices) each and 20 messages each. Not melody: at its 180
      # deliveries/s in D-users one burst would take minutes.
      D-users-10) bin/load "${common[@]}" -impls roomcast,centrifuge,gorilla -conns 10000 -users 10000 -target user -n 100000 -size 64 -bursts 3 ;;
      D-tabs)  bin/load "${common[@]}" -impls roomcast,centrifuge,gorilla -conns 10000 -users 1000 -target user -n 20000 -size 64 -bursts 3 ;;
      # 15,000 connections per instance, each instance and its subscribers in their own processes;
      # single-instance baseline, then the 3-node cluster, twice (paired ratios: the machine is noisy).
      cluster) bin/load "${common[@]}" -instances 1,3,1,3 -conns 15000 -n 20 -size 64 -bursts 5 -pause 1s ;;
      # Latency at the same offered load for everyone (issue #16): R messages/s in all, round-robin over
      # 100 rooms of 100 subscribers, each rate for 10 s, climbing until p99 > 1 s or any loss. 100 rooms, not
      # one: one message to 10,000 sockets is 60-100 ms of writes on one core here (Workloads B and C), so in
      # one room p99 < 50 ms is out of reach at any rate and the ladder would only time the writes; 100 × 100
      # is a chat's shape, where what each message costs on its way (routing, queues, wake-ups, batching)
      # decides the latency.
      paced)   bin/load "${common[@]}" -paced -conns 10000 -rooms 100 -size 64 -duration 10s -settle 2s -stop-p99 1s \
                 -rates 100,200,300,500,700,1000,1500,2000,3000,5000,10000 ;;
      # The same at 19,500 connections in one room: a message is a few hundred ms of writes here for anyone.
      paced-19500) bin/load "${common[@]}" -paced -impls roomcast,centrifuge -conns 19500 -rooms 1 -size 64 -duration 10s \
                 -settle 3s -stop-p99 5s -rates 1,2,5,10,20,40 ;;
      # Deliveries/s against the connection count: one room, bursts of 20 × 64 B, one label per count.
      scale)   for n in 5000 10000 15000 19500; do
                 bin/load "${common[@]}" -label "scale-$n" -conns "$n" -n 20 -size 64 -bursts 5 -pause 1s
               done ;;
      plot)    bin/plot -in $out.jsonl -out results -paced-label paced -scale-prefix scale-
               bin/plot -in $out.jsonl -out results -paced-label paced-19500 -scale-prefix scale- ;;
      *) echo "unknown workload $w" >&2; exit 2 ;;
    esac
  done
} 2>&1 | tee -a $out.txt
