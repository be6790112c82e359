-- POST /tasks/batchUpdateProgress: 1,000 items over 10 of BENCH_TASKS tasks (100 per task,
-- interleaved), the next 10 tasks on each call; counts the items answered ok and failed
-- (bench/http_wrk.py).
local here = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
dofile(here .. "common.lua")

local per_call = 10
local steps = 100

check_body = function(body)
   return count_plain(body, '"ok":true'), count_plain(body, '"ok":false')
end

function request()
   counter = counter + 1
   local first = ((counter + tid * 7) * per_call) % tasks
   local items = {}
   for step = 0, steps - 1 do
      for j = 0, per_call - 1 do
         items[#items + 1] = string.format(
            '{"taskId":"%s","progress":%d}', task_id(first + j), step)
      end
   end
   local body = '{"updates":[' .. table.concat(items, ",") .. "]}"
   return wrk.format("POST", "/tasks/batchUpdateProgress", json_headers, body)
end
