-- Shared by every scenario (bench/run.sh appends it to the scenario's
-- script): one machine-readable RESULT line per run.
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local e = summary.errors
  local misses = 0
  for _, t in ipairs(threads) do
    misses = misses + (t:get("misses") or 0)
  end
  io.write(string.format(
    "RESULT requests=%d duration_us=%d errors=%d non2xx=%d p50_us=%d p99_us=%d misses=%d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout + e.status,
    e.status, latency:percentile(50), latency:percentile(99), misses))
end
