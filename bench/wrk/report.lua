-- Shared by every scenario (bench/run.sh and bench/domains.sh append it to
-- the scenario's script): the count of each HTTP status, and one
-- machine-readable RESULT line per run. statuses= lists status:count
-- pairs; a run whose statuses are not all the expected ones measured
-- refusals or errors, not work, and the scripts refuse to report it.
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

statuses = {}

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local e = summary.errors
  local misses = 0
  local total = {}
  for _, t in ipairs(threads) do
    misses = misses + (t:get("misses") or 0)
    for s, n in pairs(t:get("statuses") or {}) do
      total[s] = (total[s] or 0) + n
    end
  end
  local keys = {}
  for s in pairs(total) do table.insert(keys, s) end
  table.sort(keys)
  local list = {}
  for _, s in ipairs(keys) do table.insert(list, string.format("%d:%d", s, total[s])) end
  io.write(string.format(
    "RESULT requests=%d duration_us=%d errors=%d non2xx=%d p50_us=%d p99_us=%d misses=%d socket_errors=%d statuses=%s\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout + e.status,
    e.status, latency:percentile(50), latency:percentile(99), misses,
    e.connect + e.read + e.write + e.timeout, #list > 0 and table.concat(list, ",") or "none"))
end
