/*
 * The aggregator's server-side scripts; see cfcost_agg_lua.h.  Key names
 * come from the schema headers, so the scripts cannot drift from them.
 *
 * Sums inside one batch are kept in Lua numbers (doubles), exactly: every
 * value is below 2^40 (tokens are clamped to 2^32, a cost arrives as whole
 * dollars < 2^24 and picodollars < 10^12), so a batch of at most 4096
 * entries sums below 2^52.  Redis stores every rollup field as a 64-bit
 * integer; picodollars carry into whole dollars so no field can overflow.
 *
 * The script makes no call that fails on well-formed data, so it runs to
 * the end or (Redis refusing the first write) not at all.
 */

#include "cfcost_schema.h"
#include "cfcost_agg_lua.h"


const char  cfcost_lua_apply[] =
    "local stream, group, ttl = ARGV[1], ARGV[2], ARGV[3]\n"
    "local n = tonumber(ARGV[4])\n"
    "local acc, order, days, users, ids = {}, {}, {}, {}, {}\n"
    "local applied, dup = 0, 0\n"

    "local function add(key, field, v)\n"
    "  if v == 0 then return end\n"
    "  local h = acc[key]\n"
    "  if h == nil then\n"
    "    h = {}\n"
    "    acc[key] = h\n"
    "    order[#order + 1] = key\n"
    "  end\n"
    "  h[field] = (h[field] or 0) + v\n"
    "end\n"

    "local function roll(key, m, e)\n"
    "  for pass = 1, 2 do\n"
    "    add(key, m .. '" CFCOST_ROLLUP_F_REQUESTS "', 1)\n"
    "    add(key, m .. '" CFCOST_ROLLUP_F_INPUT "', e[1])\n"
    "    add(key, m .. '" CFCOST_ROLLUP_F_OUTPUT "', e[2])\n"
    "    add(key, m .. '" CFCOST_ROLLUP_F_CACHED "', e[3])\n"
    "    add(key, m .. '" CFCOST_ROLLUP_F_COST_USD "', e[4])\n"
    "    add(key, m .. '" CFCOST_ROLLUP_F_COST "', e[5])\n"
    "    m = ''\n"
    "  end\n"
    "end\n"

    "local function day(s, d, dnum)\n"
    "  local k = '" CFCOST_ROLLUP_DAYS_PREFIX "' .. s\n"
    "  local t = days[k]\n"
    "  if t == nil then\n"
    "    t = {}\n"
    "    days[k] = t\n"
    "  end\n"
    "  t[d] = dnum\n"
    "end\n"

    "for e = 0, n - 1 do\n"
    "  local b = 5 + e * 13\n"
    "  local id, rid = ARGV[b], ARGV[b + 1]\n"
    "  ids[#ids + 1] = id\n"
    "  if rid ~= '' then\n"
    "    if ttl == '0' or redis.call('SET', '" CFCOST_APPLIED_PREFIX "'"
                                 " .. rid, id, 'NX', 'EX', ttl) then\n"
    "      applied = applied + 1\n"
    "      local d, dnum = ARGV[b + 2], ARGV[b + 3]\n"
    "      local user, key = ARGV[b + 4], ARGV[b + 5]\n"
    "      local m = '" CFCOST_ROLLUP_F_MODEL "' .. ARGV[b + 6] .. ':'\n"
    "      local v = { tonumber(ARGV[b + 7]), tonumber(ARGV[b + 8]),\n"
    "                  tonumber(ARGV[b + 9]), tonumber(ARGV[b + 10]),\n"
    "                  tonumber(ARGV[b + 11]) }\n"
    "      local member = ARGV[b + 12]\n"
    "      local scopes = { '" CFCOST_SCOPE_ALL "' }\n"
    "      if user ~= '' then\n"
    "        scopes[#scopes + 1] = '" CFCOST_SCOPE_USER "' .. user\n"
    "        users[user] = true\n"
    "        redis.call('ZADD', '" CFCOST_LOGIDX_PREFIX CFCOST_SCOPE_USER "'"
                       " .. user, 0, member)\n"
    "      end\n"
    "      if key ~= '' then\n"
    "        scopes[#scopes + 1] = '" CFCOST_SCOPE_KEY "' .. key\n"
    "      end\n"
    "      redis.call('ZADD', '" CFCOST_LOGIDX_PREFIX CFCOST_SCOPE_ALL "', 0,"
                     " member)\n"
    "      for _, s in ipairs(scopes) do\n"
    "        roll('" CFCOST_ROLLUP_PREFIX "' .. s, m, v)\n"
    "        roll('" CFCOST_ROLLUP_DAY_PREFIX "' .. d .. ':' .. s, m, v)\n"
    "        day(s, d, dnum)\n"
    "      end\n"
    "    else\n"
    "      dup = dup + 1\n"
    "    end\n"
    "  end\n"
    "end\n"

    /* one HINCRBY per field; picodollars carry into whole dollars */
    "local P = 1000000000000\n"
    "local plen = string.len('" CFCOST_ROLLUP_F_COST "')\n"
    "for _, key in ipairs(order) do\n"
    "  for f, v in pairs(acc[key]) do\n"
    "    local now = redis.call('HINCRBY', key, f, string.format('%d', v))\n"
    "    if now >= P and string.sub(f, -plen) == '" CFCOST_ROLLUP_F_COST "'"
          " then\n"
    "      local k = math.floor(now / P)\n"
    "      redis.call('HINCRBY', key, f, string.format('%d', -k * P))\n"
    "      redis.call('HINCRBY', key, string.sub(f, 1, -plen - 1) .."
                  " '" CFCOST_ROLLUP_F_COST_USD "', string.format('%d', k))\n"
    "    end\n"
    "  end\n"
    "end\n"
    "for k, t in pairs(days) do\n"
    "  for d, dnum in pairs(t) do\n"
    "    redis.call('ZADD', k, dnum, d)\n"
    "  end\n"
    "end\n"
    "for u in pairs(users) do\n"
    "  redis.call('SADD', '" CFCOST_ROLLUP_USERS "', u)\n"
    "end\n"
    "if #ids > 0 then\n"
    "  redis.call('XACK', stream, group, unpack(ids))\n"
    "end\n"
    "return { applied, dup }\n";


const char  cfcost_lua_trim[] =
    "local stream = ARGV[1]\n"
    "local now, maxage = tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local maxlen, skew = tonumber(ARGV[4]), tonumber(ARGV[5])\n"
    "local cap, icap = tonumber(ARGV[6]), tonumber(ARGV[7])\n"
    "if redis.call('EXISTS', stream) == 0 then return { 0, 0, 0 } end\n"

    "local function split(id)\n"
    "  local a, b = string.match(id, '^(%d+)%-(%d+)$')\n"
    "  return tonumber(a), tonumber(b)\n"
    "end\n"
    "local function older(x, y)\n"
    "  local xa, xb = split(x)\n"
    "  local ya, yb = split(y)\n"
    "  return xa < ya or (xa == ya and xb < yb)\n"
    "end\n"

    /* the oldest entry some group still needs: its oldest pending entry,
     * else the first it has not been given (after last-delivered-id) */
    "local groups = redis.call('XINFO', 'GROUPS', stream)\n"
    "if #groups == 0 then return { 0, 0, 0 } end\n"
    "local safe, excl = nil, false\n"
    "for _, g in ipairs(groups) do\n"
    "  local t = {}\n"
    "  for k = 1, #g, 2 do t[g[k]] = g[k + 1] end\n"
    "  local cand, ex = t['last-delivered-id'], true\n"
    "  if tonumber(t['pending']) > 0 then\n"
    "    cand, ex = redis.call('XPENDING', stream, t['name'])[2], false\n"
    "  end\n"
    "  if safe == nil or older(cand, safe) then safe, excl = cand, ex end\n"
    "end\n"

    "local len0 = redis.call('XLEN', stream)\n"
    "local skipped = 0\n"
    "if maxage > 0 then\n"
    "  local cut = string.format('%d-0', now - maxage)\n"
    "  if older(safe, cut) then cut = safe end\n"
    "  redis.call('XTRIM', stream, 'MINID', cut)\n"
    "end\n"

    /* MAXLEN removes the oldest entries: only when every entry a group
     * still needs is among the newest maxlen (counted up to cap) */
    "if maxlen > 0 and redis.call('XLEN', stream) > maxlen then\n"
    "  local start = safe\n"
    "  if excl then start = '(' .. safe end\n"
    "  local lim = maxlen\n"
    "  if lim > cap then lim = cap end\n"
    "  local r = redis.call('XRANGE', stream, start, '+', 'COUNT', lim + 1)\n"
    "  if #r <= lim then\n"
    "    redis.call('XTRIM', stream, 'MAXLEN', maxlen)\n"
    "  else\n"
    "    skipped = 1\n"
    "  end\n"
    "end\n"

    "local removed = len0 - redis.call('XLEN', stream)\n"
    "local prev = redis.call('HGET', '" CFCOST_RETENTION_HASH "',"
                 " '" CFCOST_RETENTION_F_BEFORE "')\n"
    "if removed == 0 and prev == false then return { 0, 0, skipped } end\n"

    /* where the stream begins now (an empty one: after everything) */
    "local fms, fseq = now + 1, 0\n"
    "local f = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)\n"
    "if #f > 0 then fms, fseq = split(f[1][1]) end\n"
    "if removed > 0 and (prev == false or tonumber(prev) < fms) then\n"
    "  redis.call('HSET', '" CFCOST_RETENTION_HASH "',"
                 " '" CFCOST_RETENTION_F_BEFORE "',"
                 " string.format('%d', fms))\n"
    "end\n"

    /* index members sort by ts_ms, entries by id: look at the members
     * older than the beginning (plus clock skew) and remove exactly those
     * whose entry id is gone; also on passes that trimmed nothing, to
     * finish what an earlier pass left beyond its cap */
    "local bound = '(' .. string.format('%015d', fms + skew)\n"
    "local function trim_index(key)\n"
    "  local gone = {}\n"
    "  local ms = redis.call('ZRANGEBYLEX', key, '-', bound, 'LIMIT', 0,"
                             " icap)\n"
    "  for _, m in ipairs(ms) do\n"
    "    local a, b = string.match(m, ':(%d+)%-(%d+)$')\n"
    "    a, b = tonumber(a), tonumber(b)\n"
    "    if a == nil or a < fms or (a == fms and b < fseq) then\n"
    "      gone[#gone + 1] = m\n"
    "      if #gone == 1000 then\n"
    "        redis.call('ZREM', key, unpack(gone))\n"
    "        gone = {}\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  if #gone > 0 then redis.call('ZREM', key, unpack(gone)) end\n"
    "end\n"
    "for _, u in ipairs(redis.call('SMEMBERS', '" CFCOST_ROLLUP_USERS "')) do\n"
    "  trim_index('" CFCOST_LOGIDX_PREFIX CFCOST_SCOPE_USER "' .. u)\n"
    "end\n"
    "trim_index('" CFCOST_LOGIDX_PREFIX CFCOST_SCOPE_ALL "')\n"
    "return { removed, fms, skipped }\n";
