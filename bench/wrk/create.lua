-- POST /tasks/create, a new id per request: BENCH_PREFIX (new per wrk run), the thread's
-- number and its counter, so that no two requests of any run share an id (bench/http_wrk.py).
local here = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
dofile(here .. "common.lua")

function request()
   counter = counter + 1
   local body = string.format('{"id":"%s%d-%d"}', prefix, tid, counter)
   return wrk.format("POST", "/tasks/create", json_headers, body)
end
