-- POST /v1/chat/completions; used by benchmarks/loadgen.py.
-- Environment: BENCH_MODEL (model or alias), BENCH_AUTH (bearer key),
-- BENCH_PROMPT (user text), BENCH_STREAM ("1": "stream": true; stream.lua sets it).
-- done() prints one line "BENCH_JSON {...}": counts, latency percentiles (us),
-- and wrk's error counters; "status" counts every response with status >= 400.

local model = os.getenv("BENCH_MODEL") or "healthy"
local key = os.getenv("BENCH_AUTH") or "x"
local prompt = os.getenv("BENCH_PROMPT") or "hello"
local stream = BENCH_STREAM or os.getenv("BENCH_STREAM") == "1"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.body = string.format(
  '{"model":"%s","messages":[{"role":"user","content":"%s"}]%s}',
  model, prompt, stream and ',"stream":true' or ""
)

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout
  ))
end
