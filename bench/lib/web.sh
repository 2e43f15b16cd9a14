# Sourced by bench/web.sh and bench/history.sh: one page of a running `weir web` under wrk.
# Needs: wrk, curl, python3, and $tmp (a scratch folder).

# bench_page BASE PAGE TOKEN ACCESS_LOG CONNECTIONS SECONDS: checks that BASE/PAGE answers 200,
# empties ACCESS_LOG (the server's `weir::access` log), requests the page with wrk for SECONDS
# over CONNECTIONS connections with the API token TOKEN, and prints wrk's latency and rate and
# the server's own time per request (p50 / p95 / max, from the access log).
bench_page() {
  local base=$1 page=$2 token=$3 access=$4 conns=$5 seconds=$6 code
  [ -f "$tmp/report.lua" ] || cat > "$tmp/report.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("  wrk: p50 %.1f ms, p95 %.1f ms, p99 %.1f ms, %.0f req/s, %d errors\n",
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    summary.requests / (summary.duration / 1e6),
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.timeout))
end
LUA
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$base$page")
  [ "$code" = 200 ] || { echo "$page answered $code" >&2; return 1; }
  : > "$access"
  wrk -t1 -c"$conns" -d"${seconds}s" -s "$tmp/report.lua" -H "Authorization: Bearer $token" \
    "$base$page" | grep "wrk:"
  python3 - "$access" <<'PY'
import re, statistics, sys
ms = sorted(float(m) for m in re.findall(r"\bms=([0-9.]+)", open(sys.argv[1]).read()))
if ms:
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    print(f"  server: p50 {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms, max {ms[-1]:.1f} ms over {len(ms)} requests")
PY
}
