-- wrk script for bench/proxy_bench.py: POST a fixed JSON body, report one parseable line.
--
-- Why a script: wrk's default is GET with no body, and its human summary rounds
-- latencies; done() gives the exact histogram. No response() callback on purpose:
-- it would make wrk parse every response into Lua and cost CPU on a shared machine.
-- wrk still counts non-2xx/3xx answers in summary.errors.status.
--
-- Settings come from the environment (set by proxy_bench.py):
--   WRK_BODY     request body (JSON); required
--   WRK_PATH     request path, default /v1/chat/completions
--   WRK_API_KEY  optional bearer key
--
-- Output, one line (latencies in microseconds, as wrk measures them):
--   WRK_REPORT {"requests":N,"duration_us":D,"bytes":B,"errors":{...},"latency":{...}}

wrk.method = "POST"
wrk.path = os.getenv("WRK_PATH") or "/v1/chat/completions"
wrk.body = os.getenv("WRK_BODY") or error("WRK_BODY is not set")
wrk.headers["Content-Type"] = "application/json"
local api_key = os.getenv("WRK_API_KEY")
if api_key and api_key ~= "" then
   wrk.headers["Authorization"] = "Bearer " .. api_key
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_REPORT {"requests":%d,"duration_us":%d,"bytes":%d,'
         .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
         .. '"latency":{"min":%.1f,"mean":%.1f,"stdev":%.1f,"max":%.1f,'
         .. '"p50":%.1f,"p90":%.1f,"p95":%.1f,"p99":%.1f,"p999":%.1f}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(90), latency:percentile(95),
      latency:percentile(99), latency:percentile(99.9)))
end
