-- POST /api/v1/auth/login with the benchmark user's credentials (the same request each time).
-- wrk ... -s login.lua http://127.0.0.1:PORT/api/v1/auth/login -- EMAIL PASSWORD

local req

function init(args)
   local body = string.format('{"email": "%s", "password": "%s"}', args[1], args[2])
   req = wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
end

function request()
   return req
end
