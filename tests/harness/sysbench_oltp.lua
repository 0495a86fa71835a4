-- sysbench's own oltp_read_write, unchanged, plus one machine-readable line per report interval for
-- tests/harness/sysbench.py:
--
--   #bf interval <unix time> <elapsed s> <interval s> <threads> <events> <reads> <writes> <other> <errors>
--                <reconnects> <bucket>:<count>,...
--
-- The buckets are the interval's whole latency histogram: sysbench keeps one (1024 log-spaced buckets from
-- 0.001 ms to 100 s) and computes its one --percentile from it, but prints it only at the very end, for the
-- whole run. sb_histogram_get_pct_intermediate() leaves the interval's counts in temp_array, which nothing
-- else touches before the next interval's report, so the hook, called right after it, reads them there
-- (through LuaJIT's ffi and the struct layout of sysbench 1.0's src/sb_histogram.h). The layout is checked
-- once (array_size 1024, range 0.001..100000 ms): if it does not match, the lines carry no buckets and the
-- Python side falls back to sysbench's per-interval percentile.
--
-- Run it as the test name: sysbench /path/to/sysbench_oltp.lua --db-driver=... run
-- BACKFILLD_SYSBENCH_LUA_DIR names the directory of sysbench's scripts (default /usr/share/sysbench).

local lua_dir = os.getenv("BACKFILLD_SYSBENCH_LUA_DIR") or "/usr/share/sysbench"
package.path = lua_dir .. "/?.lua;" .. package.path
dofile(lua_dir .. "/oltp_read_write.lua")

local ffi = require("ffi")
ffi.cdef [[
typedef struct {
  uint64_t *cumulative_array;
  uint64_t  cumulative_nevents;
  uint64_t *temp_array;
  uint64_t **interm_slots;
  size_t    array_size;
  double    range_min;
  double    range_max;
  double    range_deduct;
  double    range_mult;
} bf_sb_histogram_t;
extern bf_sb_histogram_t sb_latency_histogram;
typedef struct { long tv_sec; long tv_nsec; } bf_timespec_t;
int clock_gettime(int clk_id, bf_timespec_t *tp);
]]

local CLOCK_REALTIME = 0
local ts = ffi.new("bf_timespec_t")
local hist = ffi.C.sb_latency_histogram
local hist_ok = nil

local function check_layout()
  local ok = tonumber(hist.array_size) == 1024 and math.abs(hist.range_min - 0.001) < 1e-9
    and math.abs(hist.range_max - 100000) < 1e-6 and hist.temp_array ~= nil
  if ok then
    print(string.format("#bf histogram %d %.17g %.17g", tonumber(hist.array_size), hist.range_deduct,
                        hist.range_mult))
  else
    print("#bf histogram unavailable")
  end
  return ok
end

local function buckets()
  local parts = {}
  local a = hist.temp_array
  for i = 0, tonumber(hist.array_size) - 1 do
    local n = tonumber(a[i])
    if n > 0 then
      parts[#parts + 1] = i .. ":" .. n
    end
  end
  return table.concat(parts, ",")
end

function sysbench.hooks.report_intermediate(stat)
  if hist_ok == nil then
    hist_ok = check_layout()
  end
  ffi.C.clock_gettime(CLOCK_REALTIME, ts)
  local now = tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
  sysbench.report_default(stat)
  print(string.format("#bf interval %.6f %.4f %.4f %d %d %d %d %d %d %d %s", now, stat.time_total,
                      stat.time_interval, stat.threads_running, stat.events, stat.reads, stat.writes, stat.other,
                      stat.errors, stat.reconnects, hist_ok and buckets() or ""))
  io.stdout:flush()
end
