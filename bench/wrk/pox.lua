-- A fixed Autodiscover POX POST for a cached user. The body is read from
-- the file named by BENCH_POX_BODY.
local f = assert(io.open(os.getenv("BENCH_POX_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "text/xml; charset=utf-8"
