-- Counts the usage records of one writer's stream (KEYS[1]) from ARGV[1]
-- ("-", or "(<id>" to go on after an entry): an entry holds one record,
-- a batch entry (field "b") one per netstring of its value
-- (common/cfcost_schema.h).  At most 1,000 entries per call, so that
-- Redis never stalls on it.  Returns { records, where to go on from,
-- 1 when the stream's end was reached }.  For the bench and the tests.
local n, from = 0, ARGV[1]
local r = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', 1000)
for _, e in ipairs(r) do
  local f = e[2]
  if f[1] == 'b' and #f == 2 then
    local v, p = f[2], 1
    while p <= #v do
      local c = string.find(v, ':', p, true)
      if not c then break end
      p = c + tonumber(string.sub(v, p, c - 1)) + 2
      n = n + 1
    end
  else
    n = n + 1
  end
end
if #r > 0 then from = '(' .. r[#r][1] end
return { n, from, #r < 1000 and 1 or 0 }
