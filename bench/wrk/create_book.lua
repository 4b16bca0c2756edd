-- POST /api/v1/books as a signed-in user, a unique title per request.
-- wrk ... -s create_book.lua http://127.0.0.1:PORT/api/v1/books -- ACCESS_TOKEN RUN_TAG

local headers
local tag
local n = 0
local next_thread = 1

function setup(thread)
   thread:set("tid", next_thread)
   next_thread = next_thread + 1
end

function init(args)
   headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. args[1],
   }
   tag = args[2] or tostring(os.time())
end

function request()
   n = n + 1
   local body = string.format(
      '{"title": "Bench %s t%d #%d", "author": "Bench Author", "genre": "Benchmark", '
         .. '"published_year": 2024}',
      tag, tid or 0, n)
   return wrk.format("POST", nil, headers, body)
end
