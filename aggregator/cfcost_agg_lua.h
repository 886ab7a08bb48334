/*
 * The aggregator's server-side scripts.  Each runs atomically in Redis:
 * whatever happens to the aggregator, a batch is either fully applied and
 * acknowledged or not at all.
 */

#ifndef CFCOST_AGG_LUA_H
#define CFCOST_AGG_LUA_H


/*
 * Applies a batch of entries of one record stream and acknowledges them.
 *
 *   EVALSHA <sha> 0 <stream> <group> <dedup ttl s> <n>
 *       then n times: <entry id> <request id> <YYYY-MM-DD> <day number>
 *                     <user> <key id> <model> <input> <output> <cached>
 *                     <cost: whole USD> <cost: picodollars below>
 *                     <log index member>
 *
 * The n argument groups are records: a batch entry's (cfcost_schema.h)
 * follow each other, the first with the entry id, the others with ""
 * (they go as the first: applied, stale or left alone together).  A
 * record whose request id is "" is only acknowledged (deleted or
 * malformed).  With a dedup ttl ("0" turns it off) a request id already
 * marked is a duplicate: acknowledged, not counted.  Numbers are plain
 * decimal strings below 2^40.  Returns {applied, duplicates, stale}.
 *
 * Which entries are new, exactly, also without the consumer group: the
 * stream's position P (cfcost:applied-pos, the highest id done) and its
 * holes (ids at or below P delivered but not done when P passed them).
 *
 *   - id <= P: new only if it is a hole (then no longer one); otherwise
 *     it was applied already (a slow consumer whose entries were claimed
 *     and applied by another, or a group created again): "stale",
 *     acknowledged, not counted.
 *   - id > P: new only if the group has it pending (delivered, not
 *     acknowledged); an entry delivered by a group since destroyed is left
 *     alone: the group delivers it again.  When P rises to the highest of
 *     them, every entry pending in the group between the old and the new
 *     P, outside this batch, becomes a hole.
 *
 * Why that is exact: a group delivers in id order and entries only leave
 * its pending list through this script (the writer's ids only grow, so
 * nothing appears below an id delivered).  So when P rises, an entry
 * between the old and new P is either in the batch, or done before (then
 * at or below the old P), or pending: a hole.  Every entry at or below P
 * is done or a hole, holes are taken out when done, and an entry above P
 * is never done.  The group script below recreates a lost group so that
 * exactly the holes and what lies above P come again.
 */
extern const char  cfcost_lua_apply[];

/*
 * The apply script's ARGV, by name: the C side builds it with these
 * (cfcost_agg_consumer_batch.c) and the script's text has them spliced in
 * (cfcost_agg_lua.c).  Plain decimal numbers only: they are pasted into
 * Lua as they are written here.
 *
 * The head, at ARGV[i] (Lua counts from 1):
 */
#define CFCOST_LUA_APPLY_STREAM      1
#define CFCOST_LUA_APPLY_GROUP       2
#define CFCOST_LUA_APPLY_TTL         3      /* dedup ttl s, "0": off */
#define CFCOST_LUA_APPLY_N           4      /* the number of records */
#define CFCOST_LUA_APPLY_HEAD        4      /* arguments before the entries */

/*
 * Then the entries, CFCOST_LUA_APPLY_ARGS each: entry e (from 0) begins
 * at ARGV[CFCOST_LUA_APPLY_FIRST + e * CFCOST_LUA_APPLY_ARGS], each of its
 * arguments CFCOST_LUA_ENTRY_* after that.
 */
#define CFCOST_LUA_APPLY_FIRST       5      /* CFCOST_LUA_APPLY_HEAD + 1 */
#define CFCOST_LUA_APPLY_ARGS        14     /* arguments per entry */

#define CFCOST_LUA_ENTRY_ID          0      /* stream entry id: first;
                                               "": the entry before's */
#define CFCOST_LUA_ENTRY_REQUEST_ID  1      /* "": acknowledged only */
#define CFCOST_LUA_ENTRY_DAY         2      /* YYYY-MM-DD */
#define CFCOST_LUA_ENTRY_DAY_NUM     3      /* days since 1970-01-01 */
#define CFCOST_LUA_ENTRY_USER        4
#define CFCOST_LUA_ENTRY_KEY_ID      5
#define CFCOST_LUA_ENTRY_MODEL       6
#define CFCOST_LUA_ENTRY_INPUT       7
#define CFCOST_LUA_ENTRY_OUTPUT      8
#define CFCOST_LUA_ENTRY_CACHED      9
#define CFCOST_LUA_ENTRY_COST_USD    10     /* cost: whole USD */
#define CFCOST_LUA_ENTRY_COST        11     /* cost: picodollars below */
#define CFCOST_LUA_ENTRY_MEMBER      12     /* log index member */
#define CFCOST_LUA_ENTRY_PADDED      13     /* the id as the script's pad()
                                               writes it: 40 digits */


/*
 * The summed apply script: cfcost_lua_apply for a batch the consumer has
 * summed itself (cfcost_agg_consumer_sum.c), when no dedup ttl is set.
 *
 *   EVALSHA <sha> 0 <stream> <group> <n> <counted> <index words>
 *                   <rollup words> <days> <users>
 *       then the n entry ids, in ascending order (<counted> counts
 *       records: a batch entry holds several);
 *       the index: per bucket of a scope, <bucket key> <scope's set>
 *           <bucket> <its members, each followed by "\n">;
 *       the rollups: per key, <key> <f> then f times <field> <increment>;
 *       the days: per day, <days key> <day number> <YYYY-MM-DD>;
 *       the users.
 *
 * <index words> and <rollup words> count the words of their sections.
 * Each key comes once; increments are sums, as cfcost_lua_apply would
 * make them.  The ids must be one read's entries, in order.  When they
 * are exactly the entries the group has pending after the stream's
 * applied position up to the last id (commonly: all it has pending, as
 * many, the same first and last, which says the same of one read's
 * entries), every entry is new (the first rule of cfcost_lua_apply),
 * none is a hole and none becomes one: the script writes the sums, moves the position to the
 * last id, acknowledges the ids and returns {counted, 0, 0}.  Otherwise
 * it writes nothing and returns {-1, 0, 0}: the entries are for
 * cfcost_lua_apply to decide.  A key of the wrong type fails it before
 * its first write, as cfcost_lua_apply.
 */
extern const char  cfcost_lua_sum[];

#define CFCOST_LUA_SUM_FIRST         9      /* ARGV of the first id */


/*
 * Creates the group on a stream (MKSTREAM) unless it exists: at "0" for a
 * stream never applied, else just below its oldest hole, else at its
 * position; what comes again at or below the position and is no hole is
 * "stale" to the apply script.
 *
 *   EVALSHA <sha> 0 <stream> <group>
 *
 * Returns {1 created | 0 existed, start id}, or {2, ""} when the stream's
 * writer is no longer in the writers' set (its stream was retired): then
 * nothing is created.
 */
extern const char  cfcost_lua_group[];


/*
 * Retention of one record stream: trims it by age and/or length, never
 * past an entry a consumer group has not acknowledged, records where the
 * streams now begin (the latest such time), forgets holes whose entries
 * are gone.  Rollups and the log index are not touched (that is
 * cfcost_lua_logb_trim, once per pass).  A stream left empty that no group needs, idle longer
 * than max(max age, a day) (its last entry; never written: since first
 * seen so, in cfcost:retiring), is retired: deleted with its holes, its
 * writer out of the writers' set; its applied position stays, so that a
 * record of it sent again counts as stale (a writer still alive
 * registers again with its next entry).
 *
 *   EVALSHA <sha> 0 <stream> <now ms> <max age ms|0> <max len|0>
 *                   <scan cap> <writer>
 *
 * Returns {entries removed, first remaining ms, skipped length trim 0|1,
 * retired 0|1}; {0, 0, 0, 1} when there is no stream and its writer is
 * not listed (retired elsewhere), {0, 0, 0, 2} when there is no stream
 * yet; three elements when the stream has no group.
 */
extern const char  cfcost_lua_trim[];


/*
 * Retention of the log index, after a trim pass: removes the buckets
 * (string and set member, together) of every scope that end before the
 * oldest first entry of all record streams, less the clock skew
 * allowance (records are indexed by the gateway's clock, streams ordered
 * by Redis's), at most <cap> per call.  A record whose time is that old
 * while its entry is younger (a spool replayed after the retention)
 * leaves the index with them.
 *
 *   EVALSHA <sha> 0 <clock skew ms> <cap>
 *
 * Returns {buckets removed, 1 when the cap left some | 0}.
 */
extern const char  cfcost_lua_logb_trim[];


/*
 * Moves the index of earlier versions (cfcost:logidx:<scope>, a sorted
 * set of members) into buckets: everyone's, then each user's (SSCAN of
 * cfcost:r:users), at most <limit> members and 1,000 users per call.
 * Each chunk is checked, then appended and removed from the old set in
 * the same script, so a member is moved once, whatever fails.
 *
 *   EVALSHA <sha> 0 <cursor: "all" to begin> <limit>
 *
 * Returns {next cursor, "" when done; members moved; "more" or what is
 * wrong (a key of the wrong type): nothing more is moved then}.
 */
extern const char  cfcost_lua_logb_move[];

#endif /* CFCOST_AGG_LUA_H */
