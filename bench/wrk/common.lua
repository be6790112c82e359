-- Shared by the bench/wrk/*.lua scenarios (run by bench/http_wrk.py; wrk loads one script,
-- which loads this file with dofile).
--
-- Every thread counts the answers that are not 2xx (and, for batches, the items that
-- failed inside a 200) and keeps the first such answer; done() adds them up over the
-- threads and prints one line "WRKJSON {...}" that bench/http_wrk.py parses. Settings
-- come from the environment: BENCH_KEY (the X-API-Key), BENCH_PREFIX (task ids),
-- BENCH_TASKS (how many tasks the ids cycle over).

local threads = {}
local thread_count = 0

-- Main state: number the threads, so that each one's ids and counters differ.
function setup(thread)
   thread:set("tid", thread_count)
   thread_count = thread_count + 1
   table.insert(threads, thread)
end

-- Thread state (globals, read back with thread:get in done()).
tid = 0
counter = 0
non2xx = 0
ok_items = 0
failed_items = 0
first_error = ""

key = os.getenv("BENCH_KEY") or ""
prefix = os.getenv("BENCH_PREFIX") or "t-"
tasks = tonumber(os.getenv("BENCH_TASKS") or "100")
json_headers = {["Content-Type"] = "application/json", ["X-API-Key"] = key}
get_headers = {["X-API-Key"] = key}

-- The id of task number n (bench/http_wrk.py creates prefix .. %05d).
function task_id(n)
   return string.format("%s%05d", prefix, n % tasks)
end

-- Optional per-scenario check of a 2xx body: returns (ok items, failed items).
check_body = nil

local function count(haystack, needle)
   local found, at = 0, 1
   while true do
      local s, e = string.find(haystack, needle, at, true)
      if not s then return found end
      found = found + 1
      at = e + 1
   end
end
count_plain = count

function response(status, headers, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      if first_error == "" then
         first_error = status .. " " .. string.sub(body or "", 1, 300)
      end
   elseif check_body then
      local good, bad = check_body(body or "")
      ok_items = ok_items + good
      failed_items = failed_items + bad
      if bad > 0 and first_error == "" then
         local at = string.find(body, '"ok":false', 1, true) or 1
         first_error = "item failed: " .. string.sub(body, at, at + 300)
      end
   end
end

local function json_string(s)
   return '"' .. string.gsub(s, '[%c"\\]', function(c)
      return string.format("\\u%04x", string.byte(c))
   end) .. '"'
end

function done(summary, latency, requests)
   local bad, good_items, bad_items, first = 0, 0, 0, ""
   for _, thread in ipairs(threads) do
      bad = bad + thread:get("non2xx")
      good_items = good_items + thread:get("ok_items")
      bad_items = bad_items + thread:get("failed_items")
      if first == "" then first = thread:get("first_error") end
   end
   local e = summary.errors
   io.write(string.format(
      'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"non2xx":%d,"ok_items":%d,'
         .. '"failed_items":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,'
         .. '"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,'
         .. '"first_error":%s}\n',
      summary.requests, summary.duration, summary.bytes, bad, good_items, bad_items,
      e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      latency.mean, json_string(first)))
end
