#!/usr/bin/env bash
# Benchmark of `jit credential-process ENT` on a cache hit (the path the AWS CLI and SDKs
# run before every API call while credentials are near expiry), against `cat` of the same
# cached JSON file: the whole process, many runs.
#
#   benches/credential_process.sh [RUNS]      (default 300)
#
# Env: JIT_BIN (default: target/debug/jit, built with `cargo build -p jit` when missing;
#      set JIT_BIN=target/release/jit to measure a release build),
#      PERF_DOC (default: docs/performance.md; set to /dev/null to not record).
# Uses hyperfine when installed (`apt-get install -y hyperfine`), else a bash loop timed
# with `date +%s%N`. No broker is needed: the cache hit must not contact one.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-300}
JIT_BIN=${JIT_BIN:-target/debug/jit}
PERF_DOC=${PERF_DOC:-docs/performance.md}
if [ ! -x "$JIT_BIN" ]; then
  cargo build -p jit
fi
JIT_BIN=$(realpath "$JIT_BIN")

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export JIT_CONFIG_DIR="$WORK/config" JIT_CACHE_DIR="$WORK/cache"
unset JIT_SERVER
SERVER="http://127.0.0.1:9"          # nothing listens there: a cache miss would fail
ENT="bench-prod-admin"
mkdir -p -m 700 "$JIT_CONFIG_DIR" "$JIT_CACHE_DIR/credentials"
printf '{"server":"%s"}\n' "$SERVER" > "$JIT_CONFIG_DIR/config.json"

# The cache file name: `<entitlement>-<FNV-1a 64 of "server\nentitlement">.json`
# (src/cli/src/credcache.rs). Bash integers wrap at 64 bits like the Rust code.
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
if ! OUT=$("$JIT_BIN" credential-process "$ENT"); then
  echo "jit credential-process did not hit the cache (file $CACHE_FILE)" >&2
  exit 1
fi
[ "$OUT" = "$(cat "$CACHE_FILE")" ] || { echo "cache hit printed something else" >&2; exit 1; }

JIT_CMD="$JIT_BIN credential-process $ENT"
CAT_CMD="cat $CACHE_FILE"
if command -v hyperfine >/dev/null; then
  TOOL="hyperfine $(hyperfine --version | awk '{print $2}')"
  hyperfine -N --warmup 20 --runs "$RUNS" --export-json "$WORK/h.json" "$JIT_CMD" "$CAT_CMD" >&2
  # mean, stddev, min and user+system CPU in ms of both commands, from hyperfine's JSON
  read -r JIT_MEAN JIT_SD JIT_MIN JIT_CPU CAT_MEAN CAT_SD CAT_MIN CAT_CPU < <(
    tr -d '\n ' < "$WORK/h.json" | awk '
      function field(chunk, key,   m) {
        if (match(chunk, "\"" key "\":[0-9.eE+-]+")) return substr(chunk, RSTART + length(key) + 3, RLENGTH - length(key) - 3) + 0
        return 0
      }
      {
        n = split($0, parts, "\"command\":")
        for (i = 2; i <= n; i++)
          printf "%.2f %.2f %.2f %.2f ", field(parts[i], "mean") * 1000, field(parts[i], "stddev") * 1000,
            field(parts[i], "min") * 1000, (field(parts[i], "user") + field(parts[i], "system")) * 1000
        print ""
      }'
  )
else
  TOOL="bash loop, date +%s%N"
  loop() {   # mean, (population) stddev and min in ms of RUNS runs of "$@"; CPU time unknown
    local i t0 t1
    for ((i = 0; i < RUNS; i++)); do
      t0=$(date +%s%N); "$@" > /dev/null; t1=$(date +%s%N)
      echo $(( t1 - t0 ))
    done | awk 'NR == 1 || $1 < min {min = $1} {s += $1; q += $1 * $1; n++}
      END {m = s / n; printf "%.2f %.2f %.2f - ", m / 1e6, sqrt(q / n - m * m) / 1e6, min / 1e6}'
  }
  read -r JIT_MEAN JIT_SD JIT_MIN JIT_CPU CAT_MEAN CAT_SD CAT_MIN CAT_CPU < <(loop $JIT_CMD; loop $CAT_CMD; echo)
fi
RATIO=$(awk -v a="$JIT_MEAN" -v b="$CAT_MEAN" 'BEGIN {printf "%.1f", a / b}')
ms() { if [ "$1" = - ]; then echo "n/a"; else echo "$1 ms"; fi; }
PROFILE=$(case "$JIT_BIN" in */release/*) echo release ;; */debug/*) echo debug ;; *) echo unknown ;; esac)

RESULT=$(cat <<MD
### \`jit credential-process\` cache hit — $(date -u +%Y-%m-%d)

| command | mean ± σ | min | CPU (user + sys) |
|---|---|---|---|
| \`jit credential-process $ENT\` (cache hit, $PROFILE build) | $JIT_MEAN ± $JIT_SD ms | $JIT_MIN ms | $(ms "$JIT_CPU") |
| \`cat\` of the same cache file | $CAT_MEAN ± $CAT_SD ms | $CAT_MIN ms | $(ms "$CAT_CPU") |

$RUNS runs each with $TOOL on $(nproc) CPU(s), $(uname -sm), load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown);
mean ratio jit / cat: ${RATIO}.
Command: \`benches/credential_process.sh $RUNS\`$( [ "$PROFILE" = debug ] || printf ' with `JIT_BIN=%s`' "${JIT_BIN#"$PWD"/}" ).
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
