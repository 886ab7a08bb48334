-- wrk script for bench/run.sh: the same request to the baseline and to
-- cfcost, exact counts, and one JSON line from done().
--
-- Environment (read by every Lua state wrk creates):
--   BENCH_METHOD    POST (default) or GET
--   BENCH_BODY      request body (POST)
--   BENCH_HEADERS   extra headers, "Name: value" separated by "|"
--   BENCH_MODE      rate     count requests and statuses
--                   latency  also time every request (one connection per
--                            thread), exact percentiles from the samples
--                   count    stop once BENCH_COUNT responses arrived
--   BENCH_COUNT     responses to wait for (count mode)
--   BENCH_THREADS   wrk -t, to split BENCH_COUNT (count mode)
--   BENCH_DONE_DIR  an empty directory (count mode): a thread that reached
--                   its share leaves a file there; the last one interrupts
--                   wrk, which otherwise sleeps for all of -d
--
-- done() prints one line: BENCH_JSON {...} with
--   requests   responses received (as wrk counts them)
--   sent       requests written.  wrk abandons the requests in flight when
--              it stops; the server still sees (and cfcost records) them.
--   non200, statuses {code: n}, errors {connect, read, write, timeout},
--   duration_us, rps, and in latency mode p50_us p90_us p99_us p999_us
--   mean_us samples; wrk's own (coordinated-omission corrected) histogram
--   gives wrk_p50_us / wrk_p99_us in every mode.

local ffi = require("ffi")
ffi.cdef [[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec_t;
    int clock_gettime(int clk, bench_timespec_t *ts);
    int getpid(void);
    int kill(int pid, int sig);
]]

local CLOCK_MONOTONIC = 1
local SIGINT = 2
local ts = ffi.new("bench_timespec_t")

local function now_us()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

local mode = os.getenv("BENCH_MODE") or "rate"
local timing = (mode == "latency")

-- per-thread state (each wrk thread has its own Lua state)
sent = 0
nresp = 0
non200 = 0
statuses = {}
samples = {}
id = 0                  -- set by setup()

local req
local t0 = 0
local quota = 0
local finished = false


-- main state: remember the threads, number them
local threads = {}

function setup(thread)
    table.insert(threads, thread)
    thread:set("id", #threads)
end


function init(args)
    local method = os.getenv("BENCH_METHOD") or "POST"
    local body = os.getenv("BENCH_BODY")
    local headers = {}
    for h in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^|]+") do
        local name, value = string.match(h, "^%s*([^:]+):%s*(.-)%s*$")
        if name then headers[name] = value end
    end
    if method ~= "POST" then
        body = nil
    elseif body and not headers["Content-Type"] then
        headers["Content-Type"] = "application/json"
    end
    req = wrk.format(method, nil, headers, body)

    if mode == "count" then
        local total = tonumber(os.getenv("BENCH_COUNT") or "0")
        local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
        quota = math.ceil(total / nthreads)
    end
end


function request()
    sent = sent + 1
    if timing then t0 = now_us() end
    return req
end


local function thread_finished()
    finished = true
    local dir = os.getenv("BENCH_DONE_DIR")
    local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
    local f = io.open(dir .. "/thread-" .. id, "w")
    if f then f:close() end
    wrk.thread:stop()                   -- this thread sends no more
    for i = 1, nthreads do
        local g = io.open(dir .. "/thread-" .. i, "r")
        if not g then return end        -- the others still run
        g:close()
    end
    ffi.C.kill(ffi.C.getpid(), SIGINT)  -- all done: end wrk's sleep now
end


function response(status, headers, body)
    if timing then
        samples[#samples + 1] = now_us() - t0
    end
    nresp = nresp + 1
    if status ~= 200 then
        non200 = non200 + 1
        statuses[status] = (statuses[status] or 0) + 1
    end
    if quota > 0 and not finished and nresp >= quota then
        thread_finished()
    end
end


local function pct(sorted, p)
    local n = #sorted
    if n == 0 then return 0 end
    local k = math.ceil(p / 100 * n)
    if k < 1 then k = 1 end
    if k > n then k = n end
    return sorted[k]
end


local function json(v)
    local t = type(v)
    if t == "table" then
        local parts = {}
        for k, x in pairs(v) do
            parts[#parts + 1] = string.format("%q:%s", tostring(k), json(x))
        end
        table.sort(parts)
        return "{" .. table.concat(parts, ",") .. "}"
    elseif t == "number" then
        if v == math.floor(v) and math.abs(v) < 2^53 then
            return string.format("%d", v)
        end
        return string.format("%.3f", v)
    elseif t == "string" then
        return string.format("%q", v)
    end
    return tostring(v)
end


function done(summary, latency, requests)
    local out = {
        requests = summary.requests,
        duration_us = summary.duration,
        rps = summary.requests / (summary.duration / 1e6),
        errors = summary.errors,
        wrk_p50_us = latency:percentile(50),
        wrk_p99_us = latency:percentile(99),
    }
    local s, n, bad, codes, all = 0, 0, 0, {}, {}
    for _, t in ipairs(threads) do
        s = s + t:get("sent")
        n = n + t:get("nresp")
        bad = bad + t:get("non200")
        for code, c in pairs(t:get("statuses")) do
            codes[tostring(code)] = (codes[tostring(code)] or 0) + c
        end
        if timing then
            for _, x in ipairs(t:get("samples")) do all[#all + 1] = x end
        end
    end
    -- wrk calls request() once on the first thread's state before the run,
    -- only to check that it parses; that one was never sent
    out.sent = s - 1
    out.responses = n
    out.non200 = bad
    out.statuses = codes
    if timing then
        table.sort(all)
        local sum = 0
        for _, x in ipairs(all) do sum = sum + x end
        out.samples = #all
        out.mean_us = (#all > 0) and sum / #all or 0
        out.p50_us = pct(all, 50)
        out.p90_us = pct(all, 90)
        out.p99_us = pct(all, 99)
        out.p999_us = pct(all, 99.9)
    end
    io.write("BENCH_JSON ", json(out), "\n")
end
