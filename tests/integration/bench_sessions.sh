#!/usr/bin/env bash
# bench_sessions.sh - Description: the session-model benchmark (bench/bench_sessions) runs in both of its
# models, a thread per connection and an epoll event loop, at N = 20 TLS connections for 2 s each with
# heartbeats and a small bulk stream of EXTENT frames: each model served every connection and answered
# every frame (its own check, and its per-run line says so). No timing is asserted: the benchmark prints
# the figures, docs/architecture.md has them.
set -u
. "$(dirname "$0")/lib/common.sh"

B=${RPL_BUILD_DIR:?run under ctest}
BS=$B/bench/bench_sessions
[ -x "$BS" ] || skip "bench/bench_sessions is not built (RPL_BENCH=OFF)"

RT=$(mktemp -d /var/tmp/rpl-bench-sessions.XXXXXX)
CLEANUP_PATHS+=("$RT")
# Its server is a child that ends when its parent's pipe closes: killing the parent ends both.
"$BS" --counts 20 --rounds 1 --seconds 2 --rate 200 --bulk-mbs 8 --bulk-conns 2 >"$RT/out" 2>&1 &
pid=$!
CLEANUP_PIDS+=("$pid")
wait "$pid"
rc=$?
cat "$RT/out"
[ "$rc" = 0 ] || fail "bench_sessions exited with status $rc (1: a run did not serve everything)"
for model in thread epoll; do
  line=$(grep "^round 1 N=20 $model " "$RT/out") || fail "no run of the $model model"
  grep -q " served: 20/20 connections" <<<"$line" || fail "$model: not every connection was served: $line"
  hb=$(grep -o '[0-9]*/[0-9]* heartbeats' <<<"$line") || fail "$model: no heartbeat count: $line"
  ext=$(grep -o '[0-9]*/[0-9]* extents' <<<"$line") || fail "$model: no extent count: $line"
  [ "${hb%%/*}" = "$(cut -d/ -f2 <<<"${hb% *}")" ] && [ "${hb%%/*}" -gt 0 ] || fail "$model: heartbeats $hb"
  [ "${ext%%/*}" = "$(cut -d/ -f2 <<<"${ext% *}")" ] && [ "${ext%%/*}" -gt 0 ] || fail "$model: extents $ext"
  say "$model: 20/20 connections, $hb, $ext answered"
done
grep -q '^summary: served=all ' "$RT/out" || fail "the summary does not say every run was served"
say "both models served every connection and frame"
