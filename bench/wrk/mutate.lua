-- POST /tasks/updateProgress over BENCH_TASKS tasks, progress varying (bench/http_wrk.py).
local here = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
dofile(here .. "common.lua")

function request()
   counter = counter + 1
   local n = counter + tid * 7919
   local body = string.format('{"taskId":"%s","progress":%.1f}', task_id(n), (n * 37 % 1000) / 10)
   return wrk.format("POST", "/tasks/updateProgress", json_headers, body)
end
