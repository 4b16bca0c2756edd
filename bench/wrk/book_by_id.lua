-- GET <prefix><id> with a random id in 1..n per request.
-- wrk ... -s book_by_id.lua http://127.0.0.1:PORT -- /api/v1/books/ 10000 [skip]
-- With skip, an id that is a multiple of it (a deleted book) is replaced by the one before.

local prefix, n, skip = "/api/v1/books/", 10000, nil
local next_thread = 1

function setup(thread)
   thread:set("tid", next_thread)
   next_thread = next_thread + 1
end

function init(args)
   prefix = args[1] or prefix
   n = tonumber(args[2]) or n
   skip = tonumber(args[3])
   math.randomseed(os.time() * 1000 + (tid or 0))
end

function request()
   local id = math.random(n)
   if skip and id % skip == 0 then
      id = id - 1
   end
   return wrk.format("GET", prefix .. id)
end
