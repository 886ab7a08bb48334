/*
 * The aggregator's server-side scripts.  Each runs atomically in Redis:
 * whatever happens to the aggregator, a batch is either fully applied and
 * acknowledged or not at all.
 */

#ifndef CFCOST_AGG_LUA_H
#define CFCOST_AGG_LUA_H


/*
 * Applies a batch of stream entries and acknowledges them.
 *
 *   EVALSHA <sha> 0 <stream> <group> <dedup ttl s> <n>
 *       then n times: <entry id> <request id> <YYYY-MM-DD> <day number>
 *                     <user> <key id> <model> <input> <output> <cached>
 *                     <cost: whole USD> <cost: picodollars below>
 *                     <log index member>
 *
 * An entry whose request id is "" is only acknowledged (deleted or
 * malformed).  With a dedup ttl ("0" turns it off) a request id already
 * marked is a duplicate: acknowledged, not counted.  Numbers are plain
 * decimal strings below 2^40.  Returns {applied, duplicates}.
 */
extern const char  cfcost_lua_apply[];

#define CFCOST_LUA_APPLY_HEAD    4      /* arguments before the entries */
#define CFCOST_LUA_APPLY_ARGS    13     /* arguments per entry */


/*
 * Retention: trims the stream by age and/or length, never past an entry a
 * consumer group has not acknowledged, records where the stream now
 * begins, and removes from the log indexes the members whose entries are
 * gone (at most <index cap> per index and pass; stale members left over
 * read as trimmed).  Rollups are not touched.
 *
 *   EVALSHA <sha> 0 <stream> <now ms> <max age ms|0> <max len|0>
 *                   <clock skew ms> <scan cap> <index cap>
 *
 * Returns {entries removed, first remaining ms, skipped length trim 0|1}.
 */
extern const char  cfcost_lua_trim[];

#endif /* CFCOST_AGG_LUA_H */
