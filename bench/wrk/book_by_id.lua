-- GET <prefix><id> with a random id in 1..n per request.
-- wrk ... -s book_by_id.lua http://127.0.0.1:PORT -- /api/v1/books/ 10000

local prefix, n = "/api/v1/books/", 10000
local next_thread = 1

function setup(thread)
   thread:set("tid", next_thread)
   next_thread = next_thread + 1
end

function init(args)
   prefix = args[1] or prefix
   n = tonumber(args[2]) or n
   math.randomseed(os.time() * 1000 + (tid or 0))
end

function request()
   return wrk.format("GET", prefix .. math.random(n))
end
