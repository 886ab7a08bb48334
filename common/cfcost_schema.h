/*
 * cfcost Redis schema: every key name and record field, in one place.
 *
 * Included by the nginx module, the aggregator and the CLI.  Changing a
 * name here changes the wire contract between them: bump
 * CFCOST_SCHEMA_VERSION when a field changes meaning.
 */

#ifndef CFCOST_SCHEMA_H
#define CFCOST_SCHEMA_H


#define CFCOST_SCHEMA_VERSION        "2"

/*
 * API keys.  A key is never stored, only its SHA-256 (lowercase hex).
 *
 *   HASH   cfcost:key:<sha256hex>   id, user, name, prefix, created_ms,
 *                                   revoked ("0" or "1"), and when set:
 *                                   rpm (the key's requests a minute),
 *                                   user_rpm (its user's, copied here from
 *                                   cfcost:limits:user:<user>),
 *                                   user_disabled ("1": its user is)
 *   HASH   cfcost:user:<user>       created_ms, disabled ("1"), when the
 *                                   CLI has managed the user
 *   HASH   cfcost:keys              <key id> -> <sha256hex>
 *   SET    cfcost:users             user names that own at least one key
 *
 * Request rate limits (GCRA, shared by every gateway on the Redis):
 *
 *   HASH   cfcost:limits:user:<user>   rpm: the user's limit (what the CLI
 *                                      copies into each of its keys)
 *   STRING cfcost:rl:key:<key id>      the limit's theoretical arrival
 *   STRING cfcost:rl:user:<user>       time, unix microseconds; expires
 *                                      when it is in the past
 */
#define CFCOST_KEY_PREFIX            "cfcost:key:"
#define CFCOST_KEYS_INDEX            "cfcost:keys"
#define CFCOST_USERS_SET             "cfcost:users"

#define CFCOST_KEY_F_ID              "id"
#define CFCOST_KEY_F_USER            "user"
#define CFCOST_KEY_F_NAME            "name"
#define CFCOST_KEY_F_PREFIX          "prefix"
#define CFCOST_KEY_F_CREATED         "created_ms"
#define CFCOST_KEY_F_REVOKED         "revoked"
#define CFCOST_KEY_F_RPM             "rpm"
#define CFCOST_KEY_F_USER_RPM        "user_rpm"
#define CFCOST_KEY_F_USER_DISABLED   "user_disabled"

#define CFCOST_USER_PREFIX           "cfcost:user:"
#define CFCOST_USER_F_CREATED        "created_ms"
#define CFCOST_USER_F_DISABLED       "disabled"

#define CFCOST_LIMITS_USER_PREFIX    "cfcost:limits:user:"
#define CFCOST_RL_KEY_PREFIX         "cfcost:rl:key:"
#define CFCOST_RL_USER_PREFIX        "cfcost:rl:user:"
#define CFCOST_RPM_MAX               1000000

/* what a key looks like to a user: "cfk_" + 32 base62 characters */
#define CFCOST_APIKEY_TAG            "cfk_"
#define CFCOST_APIKEY_RANDOM_LEN     32
#define CFCOST_APIKEY_SHOWN_PREFIX   12     /* "cfk_" + 8, shown in lists */
#define CFCOST_KEYID_TAG             "key_"

/*
 * Usage records: one stream entry per authenticated request, in one stream
 * per writer (an nginx worker process, or its spool), so that appending is
 * idempotent and O(1): the writer chooses every entry id, "<ms>-<seq>",
 * strictly increasing within its stream, and sends a stream's records in
 * order, in transactions, one at a time, so a stream never holds a record
 * past one it lacks.  Redis refuses an id that is not above the stream's
 * top: for a re-sent record, that refusal means "stored already".
 *
 *   STREAM cfcost:rec:{<writer>}    one writer's records, fields below
 *   SET    cfcost:writers           every writer id that has a stream
 *
 * A writer id is "w" followed by 16 lowercase hex digits, random for each
 * worker process (and one more for its spool).  The braces put every key
 * of one writer on one Redis Cluster hash slot.  A writer adds itself to
 * cfcost:writers in the same transaction as its records; readers find the
 * streams there.  A stream is never deleted while its writer may re-send
 * (an empty stream still remembers its top id, which is what refuses a
 * repeat).
 */
#define CFCOST_RECORD_STREAM_PREFIX  "cfcost:rec:{"
#define CFCOST_RECORD_STREAM_SUFFIX  "}"
#define CFCOST_WRITERS_SET           "cfcost:writers"
#define CFCOST_WRITER_TAG            "w"
#define CFCOST_WRITER_ID_LEN         17     /* "w" + 16 hex */
#define CFCOST_RECORD_STREAM_LEN     (sizeof(CFCOST_RECORD_STREAM_PREFIX) - 1 \
                                      + CFCOST_WRITER_ID_LEN                  \
                                      + sizeof(CFCOST_RECORD_STREAM_SUFFIX) - 1)

#define CFCOST_R_VERSION             "v"            /* schema version */
#define CFCOST_R_REQUEST_ID          "request_id"   /* 32 hex, unique */
#define CFCOST_R_TS_MS               "ts_ms"        /* unix ms, request start */
#define CFCOST_R_KEY_ID              "key_id"
#define CFCOST_R_USER                "user"
#define CFCOST_R_MODEL               "model"        /* a priced model id,
                                                       CFCOST_MODEL_UNPRICED,
                                                       or "" when never
                                                       known */
#define CFCOST_R_MODEL_ASKED         "model_asked"  /* only with
                                                       CFCOST_MODEL_UNPRICED:
                                                       the name the client
                                                       gave, at most 128
                                                       bytes */
#define CFCOST_R_ROUTE               "route"        /* chat|openai|native */
#define CFCOST_R_STATUS              "status"       /* HTTP status to client */
#define CFCOST_R_UPSTREAM_STATUS     "upstream_status" /* 0: none received */
#define CFCOST_R_INPUT_TOKENS        "input_tokens"  /* incl. cached */
#define CFCOST_R_OUTPUT_TOKENS       "output_tokens" /* incl. reasoning */
#define CFCOST_R_CACHED_TOKENS       "cached_tokens" /* part of input */
#define CFCOST_R_COST                "cost_pusd"    /* picodollars, integer */
#define CFCOST_R_PRICE_INPUT         "price_input"  /* micro-USD per 1M */
#define CFCOST_R_PRICE_OUTPUT        "price_output"
#define CFCOST_R_PRICE_CACHED        "price_cached" /* "" when no rate */
#define CFCOST_R_PRICING_VERSION     "pricing_version"
#define CFCOST_R_LATENCY_US          "latency_us"
#define CFCOST_R_FLAGS               "flags"        /* comma list, below */
#define CFCOST_R_ERROR               "error"        /* "" or cf:<code> or
                                                       gateway reason */
#define CFCOST_R_NEURONS             "neurons"      /* "" when not reported */

/*
 * Schema 2 (what the gateway writes): the record is one field,
 * CFCOST_R_PACKED, whose value is every field above, in the order of
 * cfcost_packed_e, each a netstring: "<length in decimal>:<bytes>,".
 * The first is the version ("1:2,").  An empty field is "0:,"
 * (model_asked, price_cached, neurons, error and flags often are).  A
 * later version only adds fields at the end; readers take the fields
 * they know and ignore the rest.  One field instead of 22 is what costs
 * Redis: parsing, storing and sending 44 strings per record (XADD 4.1 ->
 * 1.4 us, XREADGROUP 5.5 -> 2.0 us).
 *
 * Schema 1 (field/value pairs, named as above) is still read: records
 * written before an upgrade, and spool files.
 *
 * A batch entry holds several records of one writer: one field,
 * CFCOST_R_BATCH, whose value is each record packed as above, itself
 * wrapped as a netstring, in the order the writer made them
 * ("<len>:<packed record>,<len>:<packed record>,...", at most
 * CFCOST_R_BATCH_MAX).  The entry is applied, acknowledged and trimmed as
 * one: its records count together, exactly once.  The entry id is the
 * id the writer gave its last record (so that, were the entry stored,
 * any of its records sent again alone is refused as stored).  Record k
 * of an entry (from 0) is "<entry id>.<k>" where a record is named (the
 * log index, the log's row ids); record 0 is also just "<entry id>".
 * One entry instead of one per record is what a stream entry costs
 * Redis: XADD, XREADGROUP's pending entry and XACK, once per batch.
 */
#define CFCOST_R_PACKED              "r"
#define CFCOST_R_BATCH               "b"
#define CFCOST_R_BATCH_MAX             1024

typedef enum {
    CFCOST_P_VERSION = 0,
    CFCOST_P_REQUEST_ID,
    CFCOST_P_TS_MS,
    CFCOST_P_KEY_ID,
    CFCOST_P_USER,
    CFCOST_P_MODEL,
    CFCOST_P_MODEL_ASKED,
    CFCOST_P_ROUTE,
    CFCOST_P_STATUS,
    CFCOST_P_UPSTREAM_STATUS,
    CFCOST_P_INPUT_TOKENS,
    CFCOST_P_OUTPUT_TOKENS,
    CFCOST_P_CACHED_TOKENS,
    CFCOST_P_COST,
    CFCOST_P_PRICE_INPUT,
    CFCOST_P_PRICE_OUTPUT,
    CFCOST_P_PRICE_CACHED,
    CFCOST_P_PRICING_VERSION,
    CFCOST_P_LATENCY_US,
    CFCOST_P_FLAGS,
    CFCOST_P_ERROR,
    CFCOST_P_NEURONS,
    CFCOST_P_NFIELDS
} cfcost_packed_e;

/*
 * The one model a record names that is not in the price table: what a
 * client chooses never becomes a rollup field or a metric label.
 */
#define CFCOST_MODEL_UNPRICED        "(unpriced)"

/* record flags */
#define CFCOST_FLAG_USAGE_UNKNOWN    "usage_unknown"
#define CFCOST_FLAG_STREAMED         "streamed"
#define CFCOST_FLAG_ESTIMATED        "estimated"
#define CFCOST_FLAG_ABORTED          "aborted"

/*
 * Gateway counters.
 *
 *   HASH   cfcost:gateway           records_dropped: records that never
 *                                   reached a stream (queue full, or
 *                                   refused for good and dead-lettered),
 *                                   added when Redis can take the count
 */
#define CFCOST_GATEWAY_HASH          "cfcost:gateway"
#define CFCOST_GATEWAY_F_DROPPED     "records_dropped"

/*
 * Rollups: written by the aggregator from the record streams, read by the
 * usage API.
 *
 * A "scope" is whose usage a rollup counts:
 *
 *   u:<user>          one user
 *   k:<key id>        one API key
 *   all               every record
 *
 * The variable part of every key comes last, and the day is fixed-width,
 * so no user or key name can make two keys collide.
 *
 *   HASH   cfcost:r:<scope>               totals since the beginning
 *   HASH   cfcost:r:d:<YYYY-MM-DD>:<scope> totals of one UTC day (ts_ms)
 *   ZSET   cfcost:r:days:<scope>          days with data: member YYYY-MM-DD,
 *                                         score days since 1970-01-01
 *   SET    cfcost:r:users                 users with at least one record
 *
 * Rollup hash fields: requests, input_tokens, output_tokens, cached_tokens,
 * and the cost as cost_usd (whole dollars) plus cost_pusd (the picodollars
 * below them, kept under 10^12 by the apply script), so that no sum can
 * overflow a 64-bit Redis integer; the same six per model as
 * "m:<model>:<field>" (the model is what lies between "m:" and the last
 * colon), so one HGETALL answers totals and by_model together.
 *
 *   STRING cfcost:applied:<request_id>    the stream entry id that applied
 *                                         the record; SET NX by the apply
 *                                         script when --dedup-ttl is set
 *                                         (off by default: the gateway
 *                                         appends each request once)
 *   STRING cfcost:logb:<bucket>:<scope>   log index: the members of one
 *                                         scope (u:<user>, all) whose
 *                                         time falls in one bucket, each
 *                                         followed by "\n"
 *   ZSET   cfcost:logbs:<scope>           the scope's buckets: member the
 *                                         bucket, score its number
 *
 * A log index member is "<ts_ms, 15 digits>:<writer>:<stream entry id>",
 * with ".<k>" after the id for record k >= 1 of a batch entry;
 * the entry is in the writer's record stream, and members sort by their
 * text (time, writer, id).  The bucket is the member's first 13 digits
 * (its time in 100 ms), so every member of a bucket sorts above every
 * member of a lower one; inside a bucket, members are in the order they
 * were applied, which a reader sorts.  The apply script appends each
 * batch's members to their buckets (records counted once, duplicates
 * never) and adds a bucket to its scope's set when the append created
 * it; see docs/log-index.md.  Retention removes whole buckets, once every
 * record stream begins after them (plus the clock skew allowance): a
 * member whose entry was trimmed from a stream while its bucket stays
 * reads as trimmed.
 *
 *   ZSET   cfcost:logidx:<scope>          the index of earlier versions
 *                                         (members score 0); moved into
 *                                         buckets by the aggregator when
 *                                         it connects, then gone
 *
 *   HASH   cfcost:applied-pos             <record stream key> -> the
 *                                         highest entry id of that stream
 *                                         the apply script counted (or
 *                                         acknowledged as malformed)
 *   ZSET   cfcost:applied-holes:<stream key>
 *                                         entries at or below that
 *                                         position delivered to a consumer
 *                                         and not applied yet; members are
 *                                         the id as 40 digits (20 + 20,
 *                                         zero-padded), scores 0
 *
 * Together they say exactly which entries of a stream were applied,
 * without the consumer group: a lost group is created again just below
 * the oldest hole, or at the position (see cfcost_agg_lua.h).
 *
 *   HASH   cfcost:retention               trimmed_before_ms: some stream
 *                                         no longer holds entries older
 *                                         than this (unix ms); absent:
 *                                         untrimmed
 */
#define CFCOST_ROLLUP_PREFIX          "cfcost:r:"
#define CFCOST_ROLLUP_DAY_PREFIX      "cfcost:r:d:"
#define CFCOST_ROLLUP_DAYS_PREFIX     "cfcost:r:days:"
#define CFCOST_ROLLUP_USERS           "cfcost:r:users"

#define CFCOST_SCOPE_USER             "u:"
#define CFCOST_SCOPE_KEY              "k:"
#define CFCOST_SCOPE_ALL              "all"

#define CFCOST_ROLLUP_F_REQUESTS      "requests"
#define CFCOST_ROLLUP_F_INPUT         "input_tokens"
#define CFCOST_ROLLUP_F_OUTPUT        "output_tokens"
#define CFCOST_ROLLUP_F_CACHED        "cached_tokens"
#define CFCOST_ROLLUP_F_COST_USD      "cost_usd"     /* whole dollars */
#define CFCOST_ROLLUP_F_COST          "cost_pusd"    /* remainder, < 10^12 */
#define CFCOST_ROLLUP_F_MODEL         "m:"          /* m:<model>:<field> */

#define CFCOST_APPLIED_PREFIX         "cfcost:applied:"
#define CFCOST_APPLIED_POS            "cfcost:applied-pos"
#define CFCOST_APPLIED_HOLES_PREFIX   "cfcost:applied-holes:"
#define CFCOST_RETIRING               "cfcost:retiring"  /* stream -> ms
                                         first seen empty, never written */

#define CFCOST_LOGB_PREFIX            "cfcost:logb:"   /* <bucket>:<scope> */
#define CFCOST_LOGB_SET_PREFIX        "cfcost:logbs:"  /* <scope> */
#define CFCOST_LOGB_DIGITS            13     /* of the member's 15: 100 ms */
#define CFCOST_LOGB_MS                100
#define CFCOST_LOGIDX_PREFIX          "cfcost:logidx:" /* earlier versions */
#define CFCOST_LOGIDX_TS_DIGITS       15

#define CFCOST_RETENTION_HASH         "cfcost:retention"
#define CFCOST_RETENTION_F_BEFORE     "trimmed_before_ms"


/*
 * Money.  Prices are integers in micro-USD per 1M tokens (0.282 USD/M is
 * 282000); a cost is tokens x that price, which is exactly picodollars
 * (1e-12 USD).  Decimal strings are made once, at the edge.
 */
#define CFCOST_PUSD_PER_USD          1000000000000ULL

#endif /* CFCOST_SCHEMA_H */
