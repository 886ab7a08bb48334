/*
 * The API key store's pure parts, shared by the CLI (which writes keys) and
 * the module (which checks them): what a key looks like, how keys and key
 * ids are made from random bytes, the SHA-256 under which a key is stored,
 * which user names and labels are accepted, and the names of the Redis
 * keys.  The names and fields themselves are in cfcost_schema.h.  No
 * nginx, no hiredis; the caller supplies the random bytes, so every
 * function here is deterministic.
 */

#ifndef CFCOST_KEYS_H
#define CFCOST_KEYS_H

#include <stddef.h>

#include "cfcost_schema.h"


/* "cfk_" + 32 base62 */
#define CFCOST_KEYS_KEY_LEN      (sizeof(CFCOST_APIKEY_TAG) - 1              \
                                  + CFCOST_APIKEY_RANDOM_LEN)

/*
 * Random bytes for one key: a byte of 248 or more is drawn again (248 is
 * 4 x 62, so every character is equally likely); 64 bytes hold fewer
 * than 32 usable ones with a probability below 1e-30.
 */
#define CFCOST_KEYS_KEY_RANDOM   64

/* "key_" + 12 hex: 48 random bits, checked for a clash when stored */
#define CFCOST_KEYS_ID_HEX       12
#define CFCOST_KEYS_ID_RANDOM    (CFCOST_KEYS_ID_HEX / 2)
#define CFCOST_KEYS_ID_LEN       (sizeof(CFCOST_KEYID_TAG) - 1               \
                                  + CFCOST_KEYS_ID_HEX)

#define CFCOST_KEYS_SHA256_LEN   32
#define CFCOST_KEYS_HASH_HEX     (2 * CFCOST_KEYS_SHA256_LEN)

/* "cfcost:key:" + the hash in hex: the key's record */
#define CFCOST_KEYS_RECORD_LEN   (sizeof(CFCOST_KEY_PREFIX) - 1              \
                                  + CFCOST_KEYS_HASH_HEX)

#define CFCOST_KEYS_USER_MAX     64
#define CFCOST_KEYS_LABEL_MAX    128


/*
 * Makes a key from rnd[0..n) into key (CFCOST_KEYS_KEY_LEN + 1 bytes,
 * NUL-terminated): the tag, then one base62 character per usable byte.
 * Returns 0, or -1 when rnd ran out of usable bytes first (key is then
 * unusable: call again with fresh bytes).  CFCOST_KEYS_KEY_RANDOM bytes
 * practically never run out.
 */
int cfcost_keys_generate(char *key, const unsigned char *rnd, size_t n);

/*
 * Writes the key id made of CFCOST_KEYS_ID_RANDOM random bytes, "key_" and
 * their lowercase hex, into id (CFCOST_KEYS_ID_LEN + 1 bytes, with NUL).
 */
void cfcost_keys_id(char *id, const unsigned char *rnd);

/* Returns 1 when s[0..len) has a key's form ("cfk_" + 32 base62), else 0. */
int cfcost_keys_valid(const char *s, size_t len);

/*
 * Writes the part of a key lists show, its first CFCOST_APIKEY_SHOWN_PREFIX
 * characters, and a NUL into prefix (CFCOST_APIKEY_SHOWN_PREFIX + 1).
 */
void cfcost_keys_prefix(char *prefix, const char *key);

/*
 * The SHA-256 of the bytes key[0..len), exactly as sent by a client, into
 * md (CFCOST_KEYS_SHA256_LEN bytes).  Returns 0, or -1 when OpenSSL fails.
 * The digest is fetched and its context made once per process (OpenSSL 3
 * would look the algorithm up on every call), so it is not thread-safe.
 */
int cfcost_keys_sha256(const char *key, size_t len, unsigned char *md);

/*
 * The same as 64 lowercase hex digits and a NUL into hex
 * (CFCOST_KEYS_HASH_HEX + 1 bytes): what Redis stores.  Returns 0 or -1.
 */
int cfcost_keys_sha256_hex(const char *key, size_t len, char *hex);

/*
 * Writes the name of the record of the key whose hash is hex (64 hex
 * digits), CFCOST_KEY_PREFIX + hex, and a NUL into name
 * (CFCOST_KEYS_RECORD_LEN + 1 bytes).  Returns its length.
 */
size_t cfcost_keys_record(char *name, const char *hex);

/* Returns 1 when s[0..len) is a user name: 1-64 of A-Z a-z 0-9 . _ @ - */
int cfcost_keys_user_valid(const char *s, size_t len);

/*
 * Returns NULL when s[0..len) is an acceptable key label, else why not,
 * as the end of a sentence ("is longer than 128 bytes"): a label is at
 * most 128 bytes of UTF-8 without a C0 or C1 control character or DEL.
 */
const char *cfcost_keys_label_invalid(const char *s, size_t len);

/*
 * Returns 1 when a record's revoked field, v[0..len), lets the key in:
 * only exactly "0" does; anything else, or no field (v NULL), is revoked.
 */
int cfcost_keys_active(const char *v, size_t len);

/*
 * A Lua script revoking the record KEYS[1]: sets its revoked field to "1"
 * only on a record that exists, so a dangling index entry cannot create
 * half a record.  Returns 0: no record, 1: revoked now, 2: was already.
 */
extern const char  cfcost_keys_revoke_lua[];

#endif /* CFCOST_KEYS_H */
