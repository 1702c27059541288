-- Scale benchmark of directory domains (bench/domains.sh). BENCH_MODE:
--   newdomain  u0@d<k>.example, every k a domain never asked before
--   newuser    u<j>@d<k>.example, j >= 1, over the domains newdomain asked
--              (each thread's first BENCH_SEEN): cached domain, new user
--   mixed      every other request as newuser's cached u0@d<k>, the others
--              u0@ of a domain never asked (from BENCH_OFFSET2)
--   cached     u0@d<k> over the domains newdomain asked (each thread's
--              first BENCH_SEEN): a cached answer every time
-- Thread t owns domains BENCH_OFFSET + (t-1)*BENCH_STRIDE onwards.
misses = 0
local n = 0
local mode = os.getenv("BENCH_MODE") or "newdomain"
local offset = tonumber(os.getenv("BENCH_OFFSET") or "0")
local offset2 = tonumber(os.getenv("BENCH_OFFSET2") or "0")
local stride = tonumber(os.getenv("BENCH_STRIDE") or "20000")
local seen = tonumber(os.getenv("BENCH_SEEN") or "1000")

request = function()
  local base = offset + (id - 1) * stride
  local addr
  if mode == "newdomain" then
    addr = string.format("u0@d%d.example", base + n)
    misses = misses + 1
  elseif mode == "cached" then
    addr = string.format("u0@d%d.example", base + n % seen)
  elseif mode == "newuser" then
    addr = string.format("u%d@d%d.example", 1 + math.floor(n / seen), base + n % seen)
    misses = misses + 1
  else
    if n % 2 == 0 then
      addr = string.format("u0@d%d.example", base + (n / 2) % seen)
    else
      addr = string.format("u0@d%d.example", offset2 + (id - 1) * stride + math.floor(n / 2))
      misses = misses + 1
    end
  end
  n = n + 1
  return wrk.format("GET", "/mail/config-v1.1.xml?emailaddress=" .. addr)
end
