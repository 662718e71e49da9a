-- chat.lua with "stream": true (SSE); wrk times each whole stream.
BENCH_STREAM = true
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "chat.lua")
