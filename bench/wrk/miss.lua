-- The miss-heavy mix: four of five requests ask for an address never asked
-- before (a directory search each, answered "unknown" with the domain
-- defaults), one of five for a cached demo user.
misses = 0
local n = 0
local tag = os.getenv("BENCH_RUN") or "0"
local known = { "alice@example.com", "bob@example.com", "dave@example.com", "a.example@example.com" }

request = function()
  n = n + 1
  local addr
  if n % 5 == 0 then
    addr = known[math.floor(n / 5) % #known + 1]
  else
    misses = misses + 1
    addr = string.format("m%s-%d-%d@example.com", tag, id, n)
  end
  return wrk.format("GET", "/mail/config-v1.1.xml?emailaddress=" .. addr)
end
