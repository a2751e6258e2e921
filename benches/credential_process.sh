#!/usr/bin/env bash
# Benchmark of `jit credential-process ENT` on a cache hit (the path the AWS CLI and SDKs
# run before every API call while credentials are near expiry), against `cat` of the same
# cached JSON file: the whole process, many runs, side by side.
#
#   benches/credential_process.sh [RUNS [ROUNDS]]   (default 1000 runs of each in 20 rounds)
#
# The runs are split into ROUNDS rounds that alternate which command goes first, so a
# burst of load on the shared machine falls on both; the report gives the median and p99
# (nearest rank) of all runs of each command, their jit / cat ratios, the range of the
# per-round median ratios, and the load average before and after.
#
# Env: JIT_BIN (default: target/debug/jit, built with `cargo build -p jit` when missing;
#      set JIT_BIN=target/release/jit to measure a release build, as docs/performance.md
#      does: `cargo build --release -p jit`),
#      PERF_DOC (default: docs/performance.md; set to /dev/null to not record).
# Uses hyperfine when installed (`apt-get install -y hyperfine`), else a bash loop timed
# with `date +%s%N` (which adds the start of `date` to both commands: ratios nearer 1).
# No broker is needed: the cache hit must not contact one.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-1000}
ROUNDS=${2:-20}
PER_ROUND=$(( (RUNS + ROUNDS - 1) / ROUNDS ))
JIT_BIN=${JIT_BIN:-target/debug/jit}
PERF_DOC=${PERF_DOC:-docs/performance.md}
if [ ! -x "$JIT_BIN" ]; then
  cargo build -p jit
fi
JIT_BIN=$(realpath "$JIT_BIN")
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export JIT_CONFIG_DIR="$WORK/config" JIT_CACHE_DIR="$WORK/cache"
unset JIT_SERVER
SERVER="http://127.0.0.1:9"          # nothing listens there: a cache miss would fail
ENT="bench-prod-admin"
mkdir -p -m 700 "$JIT_CONFIG_DIR" "$JIT_CACHE_DIR/credentials"
printf '{"server":"%s"}\n' "$SERVER" > "$JIT_CONFIG_DIR/config.json"

# The cache file name: `<entitlement>-<FNV-1a 64 of "server\nentitlement">.json`
# (src/cli-base/src/credcache.rs). Bash integers wrap at 64 bits like the Rust code.
fnv1a64() {
  local s=$1 h=-3750763034362895579 i c   # 0xcbf29ce484222325 as a signed 64-bit value
  for ((i = 0; i < ${#s}; i++)); do
    printf -v c '%d' "'${s:i:1}"
    h=$(( (h ^ c) * 1099511628211 ))
  done
  printf '%016x' "$h"
}
KEY=$(fnv1a64 "$SERVER"$'\n'"$ENT")
CACHE_FILE="$JIT_CACHE_DIR/credentials/$ENT-$KEY.json"
EXP=$(date -u -d '+50 minutes' +%Y-%m-%dT%H:%M:%SZ)
printf '{"Version":1,"AccessKeyId":"ASIABENCHKEY00000001","SecretAccessKey":"bench-secret","SessionToken":"bench-token","Expiration":"%s"}\n' \
  "$EXP" > "$CACHE_FILE"
chmod 600 "$CACHE_FILE"

# The cache hit must print the file byte for byte (and not fail for want of a broker).
if ! "$JIT_BIN" credential-process "$ENT" > "$WORK/out"; then
  echo "jit credential-process did not hit the cache (file $CACHE_FILE)" >&2
  exit 1
fi
cmp -s "$WORK/out" "$CACHE_FILE" || { echo "cache hit printed something else" >&2; exit 1; }

JIT_CMD="$JIT_BIN credential-process $ENT"
CAT_CMD="cat $CACHE_FILE"
# Each round appends "<command> <ms> <round>" lines to $WORK/times and "<command> <cpu ms>" (user +
# system, the mean of the round) to $WORK/cpu; command 1 is jit, 2 is cat.
: > "$WORK/times"
: > "$WORK/cpu"
if command -v hyperfine >/dev/null; then
  TOOL="hyperfine $(hyperfine --version | awk '{print $2}')"
  for ((r = 0; r < ROUNDS; r++)); do
    if ((r % 2 == 0)); then order=(1 2); cmds=("$JIT_CMD" "$CAT_CMD"); else order=(2 1); cmds=("$CAT_CMD" "$JIT_CMD"); fi
    hyperfine -N --warmup 5 --runs "$PER_ROUND" --export-json "$WORK/h.json" "${cmds[@]}" > /dev/null 2>&1
    # hyperfine's JSON: per command a "times" array (seconds) and "user", "system" means.
    tr -d '\n ' < "$WORK/h.json" | awk -v first="${order[0]}" -v second="${order[1]}" -v round="$r" \
      -v times="$WORK/times" -v cpu="$WORK/cpu" '
      function field(chunk, key,   m) {
        if (match(chunk, "\"" key "\":[0-9.eE+-]+")) return substr(chunk, RSTART + length(key) + 3, RLENGTH - length(key) - 3) + 0
        return 0
      }
      {
        n = split($0, parts, "\"command\":")
        for (i = 2; i <= n; i++) {
          id = (i == 2) ? first : second
          printf "%d %.4f\n", id, (field(parts[i], "user") + field(parts[i], "system")) * 1000 >> cpu
          if (match(parts[i], "\"times\":\\[[^]]*\\]")) {
            k = split(substr(parts[i], RSTART + 9, RLENGTH - 10), t, ",")
            for (j = 1; j <= k; j++) printf "%d %.4f %d\n", id, t[j] * 1000, round >> times
          }
        }
      }'
  done
else
  TOOL="bash loop, date +%s%N"
  for ((r = 0; r < ROUNDS; r++)); do
    for ((i = 0; i < PER_ROUND; i++)); do
      for id in $( ((r % 2 == 0)) && echo "1 2" || echo "2 1"); do
        if [ "$id" = 1 ]; then cmd=("$JIT_BIN" credential-process "$ENT"); else cmd=(cat "$CACHE_FILE"); fi
        t0=$(date +%s%N); "${cmd[@]}" > /dev/null; t1=$(date +%s%N)
        awk -v id="$id" -v ns=$((t1 - t0)) -v r="$r" 'BEGIN {printf "%d %.4f %d\n", id, ns / 1e6, r}' >> "$WORK/times"
      done
    done
  done
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

# Median, p99 (nearest rank), mean, sigma and min in ms of command $1, then its CPU ms.
stats() {
  awk -v id="$1" '$1 == id {print $2}' "$WORK/times" | sort -n | awk '
    {v[NR] = $1; s += $1; q += $1 * $1}
    END {
      m = s / NR; p50 = v[int((NR + 1) / 2)]; r = 0.99 * NR; p99 = v[(r == int(r)) ? r : int(r) + 1]
      printf "%.2f %.2f %.2f %.2f %.2f", p50, p99, m, sqrt(q / NR - m * m), v[1]
    }'
  awk -v id="$1" '$1 == id {s += $2; n++} END {if (n) printf " %.2f\n", s / n; else print " -"}' "$WORK/cpu"
}
read -r JIT_MED JIT_P99 JIT_MEAN JIT_SD JIT_MIN JIT_CPU < <(stats 1)
read -r CAT_MED CAT_P99 CAT_MEAN CAT_SD CAT_MIN CAT_CPU < <(stats 2)
# The median ratio of each round: its spread says how much the load moved the result.
ROUND_RATIOS=$(sort -k3,3n -k1,1n -k2,2n "$WORK/times" | awk '
  function med(a, n) {return a[int((n + 1) / 2)]}
  function flush() {if (nj && nc) printf "%.2f\n", med(j, nj) / med(c, nc); nj = nc = 0}
  $3 != round {flush(); round = $3}
  $1 == 1 {j[++nj] = $2} $1 == 2 {c[++nc] = $2}
  END {flush()}' | sort -n | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%.2f–%.2f", lo, hi}')
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
ms() { if [ "$1" = - ]; then echo "n/a"; else echo "$1 ms"; fi; }
PROFILE=$(case "$JIT_BIN" in */release/*) echo release ;; */debug/*) echo debug ;; *) echo unknown ;; esac)

RESULT=$(cat <<MD
### \`jit credential-process\` cache hit — $(date -u +%Y-%m-%d)

| command | median | p99 | mean ± σ | min | CPU (user + sys) |
|---|---|---|---|---|---|
| \`jit credential-process $ENT\` (cache hit, $PROFILE build) | $JIT_MED ms | $JIT_P99 ms | $JIT_MEAN ± $JIT_SD ms | $JIT_MIN ms | $(ms "$JIT_CPU") |
| \`cat\` of the same cache file | $CAT_MED ms | $CAT_P99 ms | $CAT_MEAN ± $CAT_SD ms | $CAT_MIN ms | $(ms "$CAT_CPU") |

jit / cat: **median $(ratio "$JIT_MED" "$CAT_MED")×, p99 $(ratio "$JIT_P99" "$CAT_P99")×** (per-round medians $ROUND_RATIOS×).
$((PER_ROUND * ROUNDS)) runs of each in $ROUNDS alternating rounds with $TOOL on $(nproc) CPU(s), $(uname -sm);
load average $LOAD_BEFORE before, $LOAD_AFTER after.
Command: \`benches/credential_process.sh $RUNS $ROUNDS\`$( [ "$PROFILE" = debug ] || printf ' with `JIT_BIN=%s`' "${JIT_BIN#"$PWD"/}" ).
MD
)
echo "$RESULT"
if [ "$PERF_DOC" != /dev/null ]; then
  if [ ! -f "$PERF_DOC" ]; then
    printf '# Performance\n\n## CLI\n\n<!-- cli-bench-results: benches/credential_process.sh inserts above this line -->\n' > "$PERF_DOC"
  fi
  MARK='<!-- cli-bench-results'
  if grep -q "$MARK" "$PERF_DOC"; then
    # Insert above the marker, keeping the results inside the CLI section.
    awk -v block="$RESULT" -v mark="$MARK" 'index($0, mark) == 1 {print block; print ""} {print}' \
      "$PERF_DOC" > "$WORK/perf.md" && cat "$WORK/perf.md" > "$PERF_DOC"
  else
    printf '\n%s\n' "$RESULT" >> "$PERF_DOC"
  fi
  echo "recorded in $PERF_DOC" >&2
fi
