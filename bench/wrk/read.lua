-- GET /tasks/{id} over BENCH_TASKS tasks (bench/http_wrk.py).
local here = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
dofile(here .. "common.lua")

function request()
   counter = counter + 1
   return wrk.format("GET", "/tasks/" .. task_id(counter + tid * 7919), get_headers, nil)
end
