#!/usr/bin/env bash
# The `load` bench at 200 arrivals/s with the long poll, in several rounds, each case with and
# without signed audit checkpoints, on both engines: what docs/performance.md's quiet-host
# sections report. Run it on an otherwise idle machine; it prints the load average before and
# after, since the tail of a 2-core machine's latencies is mostly what else runs on it.
#
#   benches/load_rounds.sh [ROUNDS]        (default 3)
#
# It starts a throw-away PostgreSQL cluster on tmpfs (/dev/shm; the server's default
# durability: fsync and synchronous_commit on) and keeps SQLite there too (TMPDIR=/dev/shm),
# so a flush costs nothing and the numbers show what the broker costs apart from the disk.
# Rounds alternate the order of the cases (checkpoints off then on, then on then off) so a
# burst of load falls on both. At the end, per engine: each round's end-to-end p50 / p99 with
# and without checkpoints, the paired difference of the p99s, and the median over the rounds.
#
# Env: LOAD_BIN (default: the `load` bench binary, built with `cargo bench --no-run`),
#      JIT_BENCH_LOAD_SECS (default 15), JIT_BENCH_LOAD_CHECKPOINT_EVERY (default 1s; 2s with
#      JIT_BENCH_LOAD_CHECKPOINTS=split), JIT_BENCH_LOAD_TOUCH_MARGIN_MS (split; default 50),
#      JIT_BENCH_ENGINES (default both), JIT_PG_BINDIR (default the newest
#      /usr/lib/postgresql/*/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
# JIT_BENCH_LOAD_CHECKPOINTS=split: one case per engine and round, the bench signing a round every
# JIT_BENCH_LOAD_CHECKPOINT_EVERY (default 2s then) and attributing its cost within the run, to
# the arrivals it touched (benches/load.rs), instead of a case without and one with.
SPLIT=0
[ "${JIT_BENCH_LOAD_CHECKPOINTS:-}" = split ] && SPLIT=1
case "$ROUNDS" in '' | *[!0-9]*) echo "usage: benches/load_rounds.sh [ROUNDS]" >&2; exit 2 ;; esac

if [ -z "${LOAD_BIN:-}" ]; then
  # The bench's own executable: cargo also reports the jit-server binary it builds.
  LOAD_BIN=$(cargo bench -p jit-server --bench load --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    t = m.get("target") or {}
    if m.get("reason") == "compiler-artifact" and t.get("name") == "load" and "bench" in t.get("kind", []) and m.get("executable"):
        print(m["executable"])' | tail -n 1)
fi
[ -x "${LOAD_BIN:-}" ] || { echo "load bench binary not found (set LOAD_BIN)" >&2; exit 1; }

PG_BIN=${JIT_PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
[ -x "$PG_BIN/initdb" ] || { echo "PostgreSQL server binaries not found (set JIT_PG_BINDIR)" >&2; exit 1; }
SHM=/dev/shm
[ -d "$SHM" ] || SHM=${TMPDIR:-/tmp}
PG_DIR=$(mktemp -d "$SHM/jit-load-pg.XXXXXX")
OUT=$(mktemp -d "${TMPDIR:-/tmp}/jit-load-rounds.XXXXXX")
AS_PG=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres:postgres "$PG_DIR"
  AS_PG=(runuser -u postgres --)
fi
stop_pg() {
  "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}
trap stop_pg EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(
  cd "$PG_DIR"
  "${AS_PG[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U jit --auth=trust -E UTF8 --locale=C.UTF-8
  "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/pg.log" -w -t 60 \
    -o "-p $PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=200" start
) >"$OUT/postgres-start.log" 2>&1 || { cat "$OUT/postgres-start.log" >&2; exit 1; }

export JIT_BENCH_PG_URL="postgres://jit@127.0.0.1:$PORT/postgres"
export TMPDIR=$SHM
export JIT_BENCH_LOAD_RATES=200 JIT_BENCH_LOAD_WAIT=long
export JIT_BENCH_LOAD_SECS=${JIT_BENCH_LOAD_SECS:-15}
EVERY=1s
[ "$SPLIT" = 1 ] && EVERY=2s
export JIT_BENCH_LOAD_CHECKPOINT_EVERY=${JIT_BENCH_LOAD_CHECKPOINT_EVERY:-$EVERY}

echo "load rounds: $ROUNDS, $JIT_BENCH_LOAD_SECS s a case, checkpoints every $JIT_BENCH_LOAD_CHECKPOINT_EVERY, $LOAD_BIN"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  order=off,on
  [ $((round % 2)) -eq 0 ] && order=on,off
  [ "$SPLIT" = 1 ] && order=split
  echo
  echo "round $round (checkpoints $order), load average $(cut -d' ' -f1-3 /proc/loadavg)"
  JIT_BENCH_LOAD_CHECKPOINTS=$order "$LOAD_BIN" | tee "$OUT/round-$round.txt"
done
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "$SPLIT" = 1 ]; then
  echo
  for f in "$OUT"/round-*.txt; do
    r=${f##*/round-}
    awk -v round="${r%.txt}" '$2 ~ /^(sqlite|postgres)$/ { engine = $2 } /^  split:/ { print "  " engine " round " round ":" substr($0, 9) }' "$f"
  done
  echo "raw output: $OUT"
  exit 0
fi

# Each table row: | engine | wait | checkpoints | offered/s | done/s | ok | failed | create |
# wait for active | credentials | end to end | ... ; end to end is "p50 / p99 / max".
echo
echo "end to end (ms), p50 / p99; \"on − off\" is the paired difference of the p99s in a round"
for f in "$OUT"/round-*.txt; do
  r=${f##*/round-}
  awk -F'|' -v round="${r%.txt}" '
    $2 ~ /^ (sqlite|postgres) $/ {
      engine = $2; gsub(/ /, "", engine)
      cp = ($4 ~ /off/) ? "off" : "on"
      split($12, t, "/"); p50[engine, cp] = t[1] + 0; p99[engine, cp] = t[2] + 0
      seen[engine] = 1
    }
    END {
      for (e in seen) printf "%s %s %.1f %.1f %.1f %.1f\n", round, e, p50[e, "off"], p99[e, "off"], p50[e, "on"], p99[e, "on"]
    }' "$f"
done | sort -k2,2 -k1,1n | awk '
  {
    key = $2; n[key]++
    d = $6 - $4
    printf "  %-8s round %s: off %.1f / %.1f, on %.1f / %.1f, on − off %+.1f\n", $2, $1, $3, $4, $5, $6, d
    diffs[key, n[key]] = d; offs[key, n[key]] = $4; ons[key, n[key]] = $6
  }
  function median(arr, key, m,    i, j, v, tmp) {
    for (i = 1; i <= m; i++) v[i] = arr[key, i]
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[j] < v[i]) { tmp = v[i]; v[i] = v[j]; v[j] = tmp }
    return (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
  }
  END {
    for (k in n) printf "  %-8s median of %d rounds: p99 off %.1f, on %.1f, on − off %+.1f ms (%+.1f %%)\n", k, n[k],
      median(offs, k, n[k]), median(ons, k, n[k]), median(diffs, k, n[k]),
      100 * median(diffs, k, n[k]) / median(offs, k, n[k])
  }'
echo "raw output: $OUT"
