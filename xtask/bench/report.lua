-- wrk script of `cargo xtask bench`: the request comes from the environment
-- (BENCH_BODY makes it a JSON POST, BENCH_AUTH adds Authorization), and the
-- summary is printed as one JSON line that the xtask reads.
local body = os.getenv("BENCH_BODY")
if body ~= nil and #body > 0 then
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end
local authorization = os.getenv("BENCH_AUTH")
if authorization ~= nil and #authorization > 0 then
  wrk.headers["Authorization"] = authorization
end

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"errors":%d,"non_2xx":%d}\n',
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max,
    errors.connect + errors.read + errors.write + errors.timeout, errors.status))
end
