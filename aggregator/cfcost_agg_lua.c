/*
 * The aggregator's server-side scripts; see cfcost_agg_lua.h.  Key names
 * come from the schema headers, so the scripts cannot drift from them.
 *
 * Sums inside one batch are kept in Lua numbers (doubles), exactly: every
 * value is below 2^40 (a token count over 2^32 - 1 counts as 0, a cost
 * arrives as whole dollars < 2^24 and picodollars < 10^12), so a batch of
 * at most 4096 entries sums below 2^52.  Redis stores every rollup field
 * as a 64-bit integer; picodollars carry into whole dollars so no field
 * can overflow.
 *
 * Redis does not roll a script back, so the apply script reads and
 * checks everything first (the type of every key it will write) and
 * writes last: it runs to the end, or fails before its first write.
 */

#include "cfcost_schema.h"
#include "cfcost_agg_lua.h"


/* "<ms>-<seq>" as 40 digits: ids compare as strings, and as ZSET members */
#define CFCOST_LUA_PAD                                                       \
    "local function pad(id)\n"                                               \
    "  local a, b = string.match(id, '^(%d+)%-(%d+)$')\n"                    \
    "  return string.rep('0', 20 - #a) .. a .. string.rep('0', 20 - #b)"     \
             " .. b\n"                                                       \
    "end\n"


/* appends s to a log bucket; the append that creates it adds the bucket
 * b to its scope's set */
#define CFCOST_LUA_LOGB_APPEND                                               \
    "local function logb_append(key, set, b, s)\n"                           \
    "  if redis.call('APPEND', key, s) == #s then\n"                         \
    "    redis.call('ZADD', set, b, b)\n"                                    \
    "  end\n"                                                                \
    "end\n"


/*
 * The apply script's ARGV by name (cfcost_agg_lua.h), as Lua text: the
 * numbers are pasted in as they are written.  The script reads an
 * entry's id as its first argument (ARGV[b], b the entry's first).
 */
#if CFCOST_LUA_APPLY_FIRST != CFCOST_LUA_APPLY_HEAD + 1                      \
    || CFCOST_LUA_APPLY_N > CFCOST_LUA_APPLY_HEAD                            \
    || CFCOST_LUA_ENTRY_ID != 0                                              \
    || CFCOST_LUA_ENTRY_MEMBER >= CFCOST_LUA_APPLY_ARGS
#error "the apply script's ARGV layout does not add up"
#endif

#define CFCOST_LUA_STR(n)        CFCOST_LUA_STR_(n)
#define CFCOST_LUA_STR_(n)       #n

/* ARGV[i] of the head */
#define CFCOST_LUA_HEAD_ARG(i)   "ARGV[" CFCOST_LUA_STR(i) "]"

/* where entry e begins: its id */
#define CFCOST_LUA_ENTRY_FIRST                                               \
    CFCOST_LUA_STR(CFCOST_LUA_APPLY_FIRST) " + e * "                         \
    CFCOST_LUA_STR(CFCOST_LUA_APPLY_ARGS)

/* an argument of the entry beginning at ARGV[b] */
#define CFCOST_LUA_ENTRY_ARG(off)  "ARGV[b + " CFCOST_LUA_STR(off) "]"


const char  cfcost_lua_apply[] =
    "local stream, group, ttl = "
        CFCOST_LUA_HEAD_ARG(CFCOST_LUA_APPLY_STREAM) ", "
        CFCOST_LUA_HEAD_ARG(CFCOST_LUA_APPLY_GROUP) ", "
        CFCOST_LUA_HEAD_ARG(CFCOST_LUA_APPLY_TTL) "\n"
    "local n = tonumber(" CFCOST_LUA_HEAD_ARG(CFCOST_LUA_APPLY_N) ")\n"
    "local holes = '" CFCOST_APPLIED_HOLES_PREFIX "' .. stream\n"
    "local acc, order, days, users, ids = {}, {}, {}, {}, {}\n"
    "local applied, dup, stale = 0, 0, 0\n"
    CFCOST_LUA_PAD
    CFCOST_LUA_LOGB_APPEND

    /* reads first: once something is written nothing may fail */
    "local pos = redis.call('HGET', '" CFCOST_APPLIED_POS "', stream)\n"
    "local ppos = pos and pad(pos) or ''\n"
    "local top, ptop = nil, ppos\n"
    /* each entry's padded id comes made: pad() per entry was a third of
     * the script's own time */
    "local function padded(e)\n"
    "  local b = " CFCOST_LUA_ENTRY_FIRST "\n"
    "  local p = " CFCOST_LUA_ENTRY_ARG(CFCOST_LUA_ENTRY_PADDED) "\n"
    "  if p == '' then p = pad(ARGV[b]) end\n"
    "  return p\n"
    "end\n"
    "for e = 0, n - 1 do\n"
    "  local id = ARGV[" CFCOST_LUA_ENTRY_FIRST "]\n"
    "  if id ~= '' then\n"
    "    local p = padded(e)\n"
    "    if p > ptop then top, ptop = id, p end\n"
    "  end\n"
    "end\n"

    /* what the group has delivered and not acknowledged above pos */
    "local pend = {}\n"
    "if top then\n"
    "  local lo = '-'\n"
    "  if pos then lo = '(' .. pos end\n"
    "  while true do\n"
    "    local r = redis.call('XPENDING', stream, group, lo, top, 1000)\n"
    "    for _, x in ipairs(r) do pend[x[1]] = true end\n"
    "    if #r < 1000 then break end\n"
    "    lo = '(' .. r[#r][1]\n"
    "  end\n"
    "end\n"

    /* at or below pos: only a hole is new; above: only what is pending
     * in this group (an entry a lost group delivered comes again) */
    /* a batch entry's further records (id '') go as its first does */
    "local go, unhole, newtop, newid = {}, {}, ppos, nil\n"
    "local was\n"
    "for e = 0, n - 1 do\n"
    "  local id = ARGV[" CFCOST_LUA_ENTRY_FIRST "]\n"
    "  if id == '' then\n"
    "    if was == 'go' then go[e] = true\n"
    "    elseif was == 'stale' then stale = stale + 1 end\n"
    "  else\n"
    "    local p = padded(e)\n"
    "    was = nil\n"
    "    if p <= ppos then\n"
    "      if redis.call('ZSCORE', holes, p) then\n"
    "        go[e], was = true, 'go'\n"
    "        unhole[#unhole + 1] = p\n"
    "      else\n"
    "        stale, was = stale + 1, 'stale'\n"
    "        ids[#ids + 1] = id\n"
    "      end\n"
    "    elseif pend[id] then\n"
    "      go[e], was = true, 'go'\n"
    "      pend[id] = nil\n"
    "      if p > newtop then newtop, newid = p, id end\n"
    "    end\n"
    "  end\n"
    "end\n"

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
    "    add(key, m .. '" CFCOST_ROLLUP_F_REQUESTS "', e[6])\n"
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

    /* the log index: members by (bucket, scope), in entry order */
    "local idx, marks, seen, grp, gorder = {}, {}, {}, {}, {}\n"
    "local function index(scope, member)\n"
    "  local b = string.sub(member, 1, " CFCOST_LUA_STR(CFCOST_LOGB_DIGITS) ")\n"
    "  local k = '" CFCOST_LOGB_PREFIX "' .. b .. ':' .. scope\n"
    "  local t = idx[k]\n"
    "  if t == nil then\n"
    "    t = { set = '" CFCOST_LOGB_SET_PREFIX "' .. scope, b = b }\n"
    "    idx[k] = t\n"
    "  end\n"
    "  t[#t + 1] = member\n"
    "end\n"

    /* what each entry adds, still only reading */
    "local cur\n"
    "for e = 0, n - 1 do\n"
    "  local b = " CFCOST_LUA_ENTRY_FIRST "\n"
    "  local id, rid = ARGV[b], "
        CFCOST_LUA_ENTRY_ARG(CFCOST_LUA_ENTRY_REQUEST_ID) "\n"
    "  if id ~= '' then\n"
    "    cur = id\n"
    "    if go[e] then ids[#ids + 1] = id end\n"
    "  end\n"
    "  if go[e] and rid ~= '' then\n"
    "    local new = true\n"
    "    if ttl ~= '0' then\n"
    "      if seen[rid] or redis.call('EXISTS', '" CFCOST_APPLIED_PREFIX "'"
                                     " .. rid) == 1 then\n"
    "        new = false\n"
    "      else\n"
    "        seen[rid] = cur\n"
    "        marks[#marks + 1] = rid\n"
    "      end\n"
    "    end\n"
    "    if new then\n"
    "      applied = applied + 1\n"
    "      local d, dnum = " CFCOST_LUA_ENTRY_ARG(CFCOST_LUA_ENTRY_DAY) ", "
              CFCOST_LUA_ENTRY_ARG(CFCOST_LUA_ENTRY_DAY_NUM) "\n"
    "      local user, key = " CFCOST_LUA_ENTRY_ARG(CFCOST_LUA_ENTRY_USER) ", "
              CFCOST_LUA_ENTRY_ARG(CFCOST_LUA_ENTRY_KEY_ID) "\n"
    "      local m = '" CFCOST_ROLLUP_F_MODEL "' .. "
              CFCOST_LUA_ENTRY_ARG(CFCOST_LUA_ENTRY_MODEL) " .. ':'\n"
    "      local v = { tonumber("
              CFCOST_LUA_ENTRY_ARG(CFCOST_LUA_ENTRY_INPUT) "), tonumber("
              CFCOST_LUA_ENTRY_ARG(CFCOST_LUA_ENTRY_OUTPUT) "),\n"
    "                  tonumber("
              CFCOST_LUA_ENTRY_ARG(CFCOST_LUA_ENTRY_CACHED) "), tonumber("
              CFCOST_LUA_ENTRY_ARG(CFCOST_LUA_ENTRY_COST_USD) "),\n"
    "                  tonumber("
              CFCOST_LUA_ENTRY_ARG(CFCOST_LUA_ENTRY_COST) ") }\n"
    "      local member = " CFCOST_LUA_ENTRY_ARG(CFCOST_LUA_ENTRY_MEMBER) "\n"
    "      if user ~= '' then\n"
    "        users[user] = true\n"
    "        if member ~= '' then\n"
    "          index('" CFCOST_SCOPE_USER "' .. user, member)\n"
    "        end\n"
    "      end\n"
    "      if member ~= '' then index('" CFCOST_SCOPE_ALL "', member) end\n"
    /* summed per (user, key, model, day) first: the rollup fields and
     * keys are made once per group, not once per record */
    "      local gk = user .. '\\0' .. key .. '\\0' .. m .. '\\0' .. d\n"
    "      local g = grp[gk]\n"
    "      if g == nil then\n"
    "        g = { 0, 0, 0, 0, 0, 0, user = user, key = key, m = m, d = d,"
                  " dnum = dnum }\n"
    "        grp[gk] = g\n"
    "        gorder[#gorder + 1] = g\n"
    "      end\n"
    "      for i = 1, 5 do g[i] = g[i] + v[i] end\n"
    "      g[6] = g[6] + 1\n"
    "    else\n"
    "      dup = dup + 1\n"
    "    end\n"
    "  end\n"
    "end\n"

    /* each group into the rollups of its scopes, total and day */
    "for _, g in ipairs(gorder) do\n"
    "  local scopes = { '" CFCOST_SCOPE_ALL "' }\n"
    "  if g.user ~= '' then\n"
    "    scopes[#scopes + 1] = '" CFCOST_SCOPE_USER "' .. g.user\n"
    "  end\n"
    "  if g.key ~= '' then\n"
    "    scopes[#scopes + 1] = '" CFCOST_SCOPE_KEY "' .. g.key\n"
    "  end\n"
    "  for _, s in ipairs(scopes) do\n"
    "    roll('" CFCOST_ROLLUP_PREFIX "' .. s, g.m, g)\n"
    "    roll('" CFCOST_ROLLUP_DAY_PREFIX "' .. g.d .. ':' .. s, g.m, g)\n"
    "    day(s, g.d, g.dnum)\n"
    "  end\n"
    "end\n"

    /*
     * Redis does not roll a script back: a key of the wrong type fails
     * the script here, before its first write, so a batch counts whole
     * or not at all (the aggregator then sets aside the entries that
     * write to that key, one by one).
     */
    "local bad\n"
    "local function want(key, t)\n"
    "  if bad then return end\n"
    "  local have = redis.call('TYPE', key)['ok']\n"
    "  if have ~= 'none' and have ~= t then\n"
    "    bad = key .. ' is a ' .. have .. ', not a ' .. t\n"
    "  end\n"
    "end\n"
    "if newid or #unhole > 0 then want(holes, 'zset') end\n"
    "if newid then want('" CFCOST_APPLIED_POS "', 'hash') end\n"
    "for _, key in ipairs(order) do want(key, 'hash') end\n"
    "for k, t in pairs(idx) do\n"
    "  want(k, 'string')\n"
    "  want(t.set, 'zset')\n"
    "end\n"
    "for k in pairs(days) do want(k, 'zset') end\n"
    "if next(users) then want('" CFCOST_ROLLUP_USERS "', 'set') end\n"
    "if bad then\n"
    "  return redis.error_reply('WRONGTYPE cfcost: ' .. bad)\n"
    "end\n"

    /* the writes */
    "if newid then\n"
    "  local add = {}\n"
    "  for id in pairs(pend) do\n"
    "    local p = pad(id)\n"
    "    if p < newtop then\n"
    "      add[#add + 1] = 0\n"
    "      add[#add + 1] = p\n"
    "      if #add == 1000 then\n"
    "        redis.call('ZADD', holes, unpack(add))\n"
    "        add = {}\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  if #add > 0 then redis.call('ZADD', holes, unpack(add)) end\n"
    "  redis.call('HSET', '" CFCOST_APPLIED_POS "', stream, newid)\n"
    "end\n"
    "if #unhole > 0 then redis.call('ZREM', holes, unpack(unhole)) end\n"
    "for _, rid in ipairs(marks) do\n"
    "  redis.call('SET', '" CFCOST_APPLIED_PREFIX "' .. rid, seen[rid],"
                 " 'EX', ttl)\n"
    "end\n"
    /* a bucket the append creates joins its scope's set */
    "for k, t in pairs(idx) do\n"
    "  logb_append(k, t.set, t.b, table.concat(t, '\\n') .. '\\n')\n"
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
    "return { applied, dup, stale }\n";


/*
 * The summed apply script: the common case of cfcost_lua_apply in a
 * fraction of its time.  The consumer has summed the batch itself; the
 * script checks that the batch is exactly what the group has pending
 * above the applied position (then every entry is new, no hole moves and
 * nothing is stale), and writes the sums; otherwise it writes nothing and
 * answers -1, and the consumer applies the same entries with
 * cfcost_lua_apply.  Its ARGV sections are read in order: ids, index,
 * rollups, days, users (cfcost_agg_lua.h).
 */
const char  cfcost_lua_sum[] =
    "local stream, group = ARGV[1], ARGV[2]\n"
    "local n, counted = tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local ia = " CFCOST_LUA_STR(CFCOST_LUA_SUM_FIRST) " + n\n"
    "local ra = ia + tonumber(ARGV[5])\n"
    "local da = ra + tonumber(ARGV[6])\n"
    "local ua = da + 3 * tonumber(ARGV[7])\n"
    "local nu = tonumber(ARGV[8])\n"
    "local top = ARGV[ia - 1]\n"
    CFCOST_LUA_LOGB_APPEND

    /* every id above the applied position: the first is */
    "local first = ARGV[" CFCOST_LUA_STR(CFCOST_LUA_SUM_FIRST) "]\n"
    "local pos = redis.call('HGET', '" CFCOST_APPLIED_POS "', stream)\n"
    "if pos then\n"
    "  local function gt(a, b) return #a > #b or (#a == #b and a > b) end\n"
    "  local fa, fb = string.match(first, '^(%d+)%-(%d+)$')\n"
    "  local pa, pb = string.match(pos, '^(%d+)%-(%d+)$')\n"
    "  if not fa or not pa"
         " or not (gt(fa, pa) or (fa == pa and gt(fb, pb))) then\n"
    "    return { -1, 0, 0 }\n"
    "  end\n"
    "end\n"

    /*
     * The batch is exactly what the group has pending from above the
     * position up to its last id.  Commonly the group's whole pending list
     * is the batch: n entries pending, the first and last the batch's
     * (XPENDING's summary, nothing per record).  The batch is one read's
     * entries, n distinct ids in order, and that read was given every
     * entry of the stream from its first id to its last: another entry
     * pending in that range would have been given twice.  Otherwise (a
     * reclaim, our own pending after a reconnect, another consumer's
     * entries) the pending entries in that range, one by one.
     */
    "local r = redis.pcall('XPENDING', stream, group)\n"
    "if type(r) ~= 'table' or r.err then return { -1, 0, 0 } end\n"
    "if r[1] ~= n or r[2] ~= first or r[3] ~= top then\n"
    "  local lo = '-'\n"
    "  if pos then lo = '(' .. pos end\n"
    "  r = redis.pcall('XPENDING', stream, group, lo, top, n + 1)\n"
    "  if type(r) ~= 'table' or r.err or #r ~= n then return { -1, 0, 0 } end\n"
    "  for i = 1, n do\n"
    "    if r[i][1] ~= ARGV[" CFCOST_LUA_STR(CFCOST_LUA_SUM_FIRST) " + i - 1]"
           " then return { -1, 0, 0 } end\n"
    "  end\n"
    "end\n"

    /* reads first (cfcost_lua_apply): nothing may fail once written */
    "local bad\n"
    "local function want(key, t)\n"
    "  if bad then return end\n"
    "  local have = redis.call('TYPE', key)['ok']\n"
    "  if have ~= 'none' and have ~= t then\n"
    "    bad = key .. ' is a ' .. have .. ', not a ' .. t\n"
    "  end\n"
    "end\n"
    "want('" CFCOST_APPLIED_POS "', 'hash')\n"
    "local set\n"
    "for j = ia, ra - 1, 4 do\n"
    "  want(ARGV[j], 'string')\n"
    "  if ARGV[j + 1] ~= set then\n"
    "    set = ARGV[j + 1]\n"
    "    want(set, 'zset')\n"
    "  end\n"
    "end\n"
    "local i = ra\n"
    "while i < da do\n"
    "  want(ARGV[i], 'hash')\n"
    "  i = i + 2 + 2 * tonumber(ARGV[i + 1])\n"
    "end\n"
    "for j = da, ua - 1, 3 do want(ARGV[j], 'zset') end\n"
    "if nu > 0 then want('" CFCOST_ROLLUP_USERS "', 'set') end\n"
    "if bad then\n"
    "  return redis.error_reply('WRONGTYPE cfcost: ' .. bad)\n"
    "end\n"

    /* the writes */
    "redis.call('HSET', '" CFCOST_APPLIED_POS "', stream, top)\n"
    "for j = ia, ra - 1, 4 do\n"
    "  logb_append(ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3])\n"
    "end\n"
    "local P = 1000000000000\n"
    "local plen = string.len('" CFCOST_ROLLUP_F_COST "')\n"
    "i = ra\n"
    "while i < da do\n"
    "  local key, e = ARGV[i], i + 1 + 2 * tonumber(ARGV[i + 1])\n"
    "  for j = i + 2, e, 2 do\n"
    "    local f = ARGV[j]\n"
    "    local now = redis.call('HINCRBY', key, f, ARGV[j + 1])\n"
    "    if now >= P and string.sub(f, -plen) == '" CFCOST_ROLLUP_F_COST "'"
          " then\n"
    "      local k = math.floor(now / P)\n"
    "      redis.call('HINCRBY', key, f, string.format('%d', -k * P))\n"
    "      redis.call('HINCRBY', key, string.sub(f, 1, -plen - 1) .."
                  " '" CFCOST_ROLLUP_F_COST_USD "', string.format('%d', k))\n"
    "    end\n"
    "  end\n"
    "  i = e + 1\n"
    "end\n"
    "for j = da, ua - 1, 3 do\n"
    "  redis.call('ZADD', ARGV[j], ARGV[j + 1], ARGV[j + 2])\n"
    "end\n"
    "for j = ua, ua + nu - 1, 1000 do\n"
    "  redis.call('SADD', '" CFCOST_ROLLUP_USERS "',"
                 " unpack(ARGV, j, math.min(j + 999, ua + nu - 1)))\n"
    "end\n"
    "for j = " CFCOST_LUA_STR(CFCOST_LUA_SUM_FIRST) ", ia - 1, 1000 do\n"
    "  redis.call('XACK', stream, group,"
                 " unpack(ARGV, j, math.min(j + 999, ia - 1)))\n"
    "end\n"
    "return { counted, 0, 0 }\n";


const char  cfcost_lua_group[] =
    "local stream, group = ARGV[1], ARGV[2]\n"
    "local function dec(s)\n"
    "  local i = #s\n"
    "  while string.sub(s, i, i) == '0' do i = i - 1 end\n"
    "  return string.sub(s, 1, i - 1)"
             " .. string.char(string.byte(s, i) - 1)"
             " .. string.rep('9', #s - i)\n"
    "end\n"
    "local function num(s)\n"
    "  s = string.match(s, '^0*(%d-)$')\n"
    "  if s == '' then return '0' end\n"
    "  return s\n"
    "end\n"
    /* a writer no longer in the set was retired: no group, no stream */
    "local w = string.match(stream, '{(w%x+)}')\n"
    "if w == nil or redis.call('SISMEMBER', '" CFCOST_WRITERS_SET "', w)"
         " == 0 then\n"
    "  return { 2, '' }\n"
    "end\n"
    "local start = '0'\n"
    "local h = redis.call('ZRANGE', '" CFCOST_APPLIED_HOLES_PREFIX "'"
                         " .. stream, 0, 0)\n"
    "if #h > 0 then\n"
    "  local a, b = string.sub(h[1], 1, 20), string.sub(h[1], 21, 40)\n"
    "  if num(b) ~= '0' then\n"
    "    start = num(a) .. '-' .. num(dec(b))\n"
    "  elseif num(a) ~= '0' then\n"
    "    start = num(dec(a)) .. '-18446744073709551615'\n"
    "  end\n"
    "else\n"
    "  local p = redis.call('HGET', '" CFCOST_APPLIED_POS "', stream)\n"
    "  if p then start = p end\n"
    "end\n"
    "local r = redis.pcall('XGROUP', 'CREATE', stream, group, start,"
                         " 'MKSTREAM')\n"
    "if type(r) == 'table' and r.err then\n"
    "  if string.sub(r.err, 1, 9) == 'BUSYGROUP' then return { 0, start } end\n"
    "  return r\n"
    "end\n"
    "return { 1, start }\n";


const char  cfcost_lua_trim[] =
    "local stream, writer = ARGV[1], ARGV[6]\n"
    "local now, maxage = tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local maxlen, cap = tonumber(ARGV[4]), tonumber(ARGV[5])\n"
    "local holes = '" CFCOST_APPLIED_HOLES_PREFIX "' .. stream\n"
    CFCOST_LUA_PAD
    /* no stream: 1 when its writer was retired (by another aggregator),
     * else 2 (nothing to trim, nobody to reap) */
    "if redis.call('EXISTS', stream) == 0 then\n"
    "  if redis.call('SISMEMBER', '" CFCOST_WRITERS_SET "', writer) == 0"
        " then return { 0, 0, 0, 1 } end\n"
    "  return { 0, 0, 0, 2 }\n"
    "end\n"

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
    "local safe, excl, busy = nil, false, false\n"
    "for _, g in ipairs(groups) do\n"
    "  local t = {}\n"
    "  for k = 1, #g, 2 do t[g[k]] = g[k + 1] end\n"
    "  local cand, ex = t['last-delivered-id'], true\n"
    "  if tonumber(t['pending']) > 0 then\n"
    "    busy = true\n"
    "    cand, ex = redis.call('XPENDING', stream, t['name'])[2], false\n"
    "  end\n"
    "  if safe == nil or older(cand, safe) then\n"
    "    safe, excl = cand, ex\n"
    "  elseif cand == safe then\n"
    "    excl = excl and ex\n"        /* a tie: pending wins */
    "  end\n"
    "end\n"

    "local len0 = redis.call('XLEN', stream)\n"
    "local skipped = 0\n"
    "if maxage > 0 then\n"
    "  local cut = string.format('%d-0', now - maxage)\n"
    /* MINID keeps its id: past the last delivered (all acknowledged)
     * entry, so that a stream read to its end can be emptied */
    "  if older(safe, cut) then\n"
    "    cut = safe\n"
    "    local a, b = split(safe)\n"
    "    if excl and b < 9007199254740992 then\n"
    "      cut = string.format('%d-%d', a, b + 1)\n"
    "    end\n"
    "  end\n"
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

    /* where the stream begins now; an empty one after its last id */
    "local fms, fseq\n"
    "local f = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)\n"
    "if #f > 0 then\n"
    "  fms, fseq = split(f[1][1])\n"
    "else\n"
    "  local info = redis.call('XINFO', 'STREAM', stream)\n"
    "  for k = 1, #info, 2 do\n"
    "    if info[k] == 'last-generated-id' then\n"
    "      fms, fseq = split(info[k + 1])\n"
    "      fseq = fseq + 1\n"
    "    end\n"
    "  end\n"
    "end\n"

    /* holes below the first entry are entries deleted while pending */
    "local lo = '(' .. pad(string.format('%d-%d', fms, fseq))\n"
    "local dead = redis.call('ZRANGEBYLEX', holes, '-', lo, 'LIMIT', 0,"
                           " 1000)\n"
    "if #dead > 0 then redis.call('ZREM', holes, unpack(dead)) end\n"

    "local len = redis.call('XLEN', stream)\n"
    "local removed = len0 - len\n"

    /*
     * An empty stream no group still needs, idle for longer than the
     * retention and a day (its last entry that old; never written: first
     * seen so that long ago, in cfcost:retiring): its writer is gone, or
     * idle so long that it may as well be.  It leaves the writers' set,
     * atomically, so that its reads and this set stop growing with every
     * worker that ever ran.  Its applied position stays: a record of it
     * sent again later (a lost reply, an old spool file) is at or below
     * it, and counts as stale, not twice.  A writer still alive finds out
     * on its next XADD (NOMKSTREAM: nil) and registers again with the
     * entry, in one transaction.
     */
    "local retired, horizon = 0, now - math.max(maxage, 86400000)\n"
    "local idle = false\n"
    "if len == 0 and not busy then\n"
    "  if fms == 0 then\n"
    "    local seen = redis.call('HGET', '" CFCOST_RETIRING "', stream)\n"
    "    if seen == false then\n"
    "      redis.call('HSET', '" CFCOST_RETIRING "', stream,"
                   " string.format('%d', now))\n"
    "    else\n"
    "      idle = tonumber(seen) < horizon\n"
    "    end\n"
    "  else\n"
    "    idle = maxage > 0 and fms < horizon\n"
    "  end\n"
    "end\n"
    "if idle then\n"
    "  redis.call('DEL', stream, holes)\n"
    "  redis.call('HDEL', '" CFCOST_RETIRING "', stream)\n"
    "  redis.call('SREM', '" CFCOST_WRITERS_SET "', writer)\n"
    "  retired = 1\n"
    "elseif fms ~= 0 then\n"
    "  redis.call('HDEL', '" CFCOST_RETIRING "', stream)\n"
    "end\n"

    "local prev = redis.call('HGET', '" CFCOST_RETENTION_HASH "',"
                 " '" CFCOST_RETENTION_F_BEFORE "')\n"
    "if removed == 0 and prev == false then\n"
    "  return { 0, 0, skipped, retired }\n"
    "end\n"
    "if removed > 0 and (prev == false or tonumber(prev) < fms) then\n"
    "  redis.call('HSET', '" CFCOST_RETENTION_HASH "',"
                 " '" CFCOST_RETENTION_F_BEFORE "',"
                 " string.format('%d', fms))\n"
    "end\n"

    "return { removed, fms, skipped, retired }\n";


const char  cfcost_lua_logb_trim[] =
    "local skew, cap = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    /* the oldest first entry of every record stream */
    "local oldest\n"
    "for _, w in ipairs(redis.call('SMEMBERS', '" CFCOST_WRITERS_SET "'))"
        " do\n"
    "  local s = '" CFCOST_RECORD_STREAM_PREFIX "' .. w .. '"
               CFCOST_RECORD_STREAM_SUFFIX "'\n"
    "  local ms\n"
    "  local f = redis.call('XRANGE', s, '-', '+', 'COUNT', 1)\n"
    "  if #f > 0 then\n"
    "    ms = tonumber(string.match(f[1][1], '^(%d+)'))\n"
    "  elseif redis.call('EXISTS', s) == 1 then\n"
    "    local info = redis.call('XINFO', 'STREAM', s)\n"
    "    for k = 1, #info, 2 do\n"
    "      if info[k] == 'last-generated-id'"
             " and info[k + 1] ~= '0-0' then\n"
    "        ms = tonumber(string.match(info[k + 1], '^(%d+)'))\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  if ms and (oldest == nil or ms < oldest) then oldest = ms end\n"
    "end\n"
    "if oldest == nil then return { 0, 0 } end\n"
    /* buckets below this one end before oldest - skew */
    "local bound = math.floor((oldest - skew) / " CFCOST_LUA_STR(CFCOST_LOGB_MS)
                               ")\n"
    "local removed, left = 0, 0\n"
    "local function trim(scope)\n"
    "  if removed >= cap then\n"
    "    left = 1\n"
    "    return\n"
    "  end\n"
    "  local set = '" CFCOST_LOGB_SET_PREFIX "' .. scope\n"
    "  local bs = redis.call('ZRANGEBYSCORE', set, '-inf',"
                  " string.format('(%d', bound), 'LIMIT', 0, cap - removed)\n"
    "  if #bs == cap - removed then left = 1 end\n"
    "  for i = 1, #bs, 1000 do\n"
    "    local e, keys = math.min(i + 999, #bs), {}\n"
    "    for j = i, e do\n"
    "      keys[#keys + 1] = '" CFCOST_LOGB_PREFIX "' .. bs[j] .. ':' .. scope\n"
    "    end\n"
    "    redis.call('DEL', unpack(keys))\n"
    "    redis.call('ZREM', set, unpack(bs, i, e))\n"
    "  end\n"
    "  removed = removed + #bs\n"
    "end\n"
    "trim('" CFCOST_SCOPE_ALL "')\n"
    "for _, u in ipairs(redis.call('SMEMBERS', '" CFCOST_ROLLUP_USERS "')) do\n"
    "  trim('" CFCOST_SCOPE_USER "' .. u)\n"
    "end\n"
    "return { removed, left }\n";


const char  cfcost_lua_logb_move[] =
    "local cur, limit = ARGV[1], tonumber(ARGV[2])\n"
    "local moved, looked = 0, 0\n"
    CFCOST_LUA_LOGB_APPEND
    "local function wrong(key, want)\n"
    "  local t = redis.call('TYPE', key)['ok']\n"
    "  if t ~= 'none' and t ~= want then\n"
    "    return key .. ' is a ' .. t .. ', not a ' .. want\n"
    "  end\n"
    "end\n"
    /* the scope's old members into buckets, up to the limit, a chunk at a
     * time (each checked, then written whole): 'done' when the old index
     * is gone, 'more', or what is wrong */
    "local function move(scope)\n"
    "  local old = '" CFCOST_LOGIDX_PREFIX "' .. scope\n"
    "  local set = '" CFCOST_LOGB_SET_PREFIX "' .. scope\n"
    "  local bad = wrong(old, 'zset') or wrong(set, 'zset')\n"
    "  if bad then return bad end\n"
    "  while moved < limit do\n"
    "    local ms = redis.call('ZRANGE', old, 0,"
                            " math.min(limit - moved, 1000) - 1)\n"
    "    if #ms == 0 then return 'done' end\n"
    "    local byb = {}\n"
    "    for _, m in ipairs(ms) do\n"
    "      if string.sub(m, 16, 17) == ':w' then\n"
    "        local b = string.sub(m, 1, " CFCOST_LUA_STR(CFCOST_LOGB_DIGITS) ")\n"
    "        if byb[b] == nil then byb[b] = {} end\n"
    "        byb[b][#byb[b] + 1] = m\n"
    "      end\n"
    "    end\n"
    "    for b in pairs(byb) do\n"
    "      bad = wrong('" CFCOST_LOGB_PREFIX "' .. b .. ':' .. scope,"
                      " 'string')\n"
    "      if bad then return bad end\n"
    "    end\n"
    "    for b, l in pairs(byb) do\n"
    "      logb_append('" CFCOST_LOGB_PREFIX "' .. b .. ':' .. scope, set, b,"
                  " table.concat(l, '\\n') .. '\\n')\n"
    "    end\n"
    "    redis.call('ZREM', old, unpack(ms))\n"
    "    moved = moved + #ms\n"
    "  end\n"
    "  return 'more'\n"
    "end\n"
    "local r\n"
    "if cur == '" CFCOST_SCOPE_ALL "' then\n"
    "  r = move('" CFCOST_SCOPE_ALL "')\n"
    "  if r ~= 'done' then return { cur, moved, r } end\n"
    "  cur = '0'\n"
    "end\n"
    "repeat\n"
    "  local sc = redis.call('SSCAN', '" CFCOST_ROLLUP_USERS "', cur, 'COUNT',"
                          " 100)\n"
    "  for _, u in ipairs(sc[2]) do\n"
    "    r = move('" CFCOST_SCOPE_USER "' .. u)\n"
    "    if r ~= 'done' then return { cur, moved, r } end\n"
    "  end\n"
    "  looked = looked + #sc[2]\n"
    "  cur = sc[1]\n"
    "until cur == '0' or moved >= limit or looked >= 1000\n"
    "if cur == '0' then cur = '' end\n"
    "return { cur, moved, 'more' }\n";
