-- wrk script: POSTs one GraphQL request over and over.
-- The document comes from the environment: BODY (the JSON request body) and, optionally,
-- CACHE_CONTROL (e.g. "no-store" to keep the response cache out of it). Responses other
-- than 200 are counted and reported at the end, so a run that measured errors says so.
wrk.method = "POST"
wrk.body = os.getenv("BODY")
wrk.headers["Content-Type"] = "application/json"
local cache_control = os.getenv("CACHE_CONTROL")
if cache_control and cache_control ~= "" then
  wrk.headers["Cache-Control"] = cache_control
end

local failed = 0
function response(status, headers, body)
  if status ~= 200 or string.find(body, '"errors"', 1, true) then
    failed = failed + 1
  end
end

function done(summary, latency, requests)
  -- One thread (wrk -t1), so this thread's count is the run's.
  io.write(string.format("failed responses: %d\n", failed))
end
