-- wrk script for bench/rest.py: every request is the next line of a request list,
--   <token> <path> [<etag>]
-- sent with that user's bearer token (and If-None-Match when the line has an ETag), and
-- the headers given with -H.
-- Usage: wrk -s bench/rest.lua ... <url> -- <request list file> [<ms between a connection's
-- requests>] (the pause keeps the rate at about connections / pause, instead of all it can).
-- At the end it prints one JSON line: requests, seconds, latency percentiles (ms), statuses.

local lines = {}
local next_line = 0
statuses = {}
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

local pause = 0

function init(args)
  pause = tonumber(args[2] or "0")
  for line in io.lines(args[1]) do
    local token, path, etag = line:match("^(%S+) (%S+) ?(.*)$")
    local headers = { ["Authorization"] = "Bearer " .. token }
    for name, value in pairs(wrk.headers) do  -- the -H headers of the command line
      headers[name] = value
    end
    if etag ~= nil and etag ~= "" then
      headers["If-None-Match"] = etag
    end
    table.insert(lines, wrk.format("GET", path, headers))
  end
  -- threads start at different places of the list, so they do not ask for the same user
  next_line = (id * 7919) % #lines
end

function request()
  next_line = next_line % #lines + 1
  return lines[next_line]
end

function delay()
  return pause
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counted = {}
  for _, thread in ipairs(threads) do
    local seen = thread:get("statuses")
    for status, n in pairs(seen) do
      counted[tostring(status)] = (counted[tostring(status)] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counted) do
    table.insert(parts, string.format('"%s": %d', status, n))
  end
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "p50": %.3f, "p90": %.3f, "p99": %.3f, "max": %.3f,'
      .. ' "errors": %d, "timeouts": %d, "statuses": {%s}}\n',
    summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(99) / 1e3,
    latency.max / 1e3,
    errors.connect + errors.read + errors.write + errors.status, errors.timeout,
    table.concat(parts, ", ")))
end
