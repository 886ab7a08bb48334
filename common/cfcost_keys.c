/*
 * The API key store's pure parts: see cfcost_keys.h for the contract.
 */

#include <string.h>

#include <openssl/evp.h>

#include "cfcost_json.h"
#include "cfcost_keys.h"


/* 248 = 4 x 62: bytes at or above it are drawn again */
#define CFCOST_KEYS_BASE62_LIMIT  248

#define CFCOST_KEYS_TAG_LEN       (sizeof(CFCOST_APIKEY_TAG) - 1)


static const char  cfcost_keys_base62[] =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static const char  cfcost_keys_hexdigits[] = "0123456789abcdef";


const char  cfcost_keys_revoke_lua[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end "
    "if redis.call('HGET', KEYS[1], '" CFCOST_KEY_F_REVOKED "') == '1' "
    "then return 2 end "
    "redis.call('HSET', KEYS[1], '" CFCOST_KEY_F_REVOKED "', '1') "
    "return 1";


/* Writes the lowercase hex of in[0..n) and a NUL into out. */
static void
cfcost_keys_hex(char *out, const unsigned char *in, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        out[2 * i] = cfcost_keys_hexdigits[in[i] >> 4];
        out[2 * i + 1] = cfcost_keys_hexdigits[in[i] & 0x0f];
    }

    out[2 * n] = '\0';
}


int
cfcost_keys_generate(char *key, const unsigned char *rnd, size_t n)
{
    size_t  i, k;
    char   *p;

    memcpy(key, CFCOST_APIKEY_TAG, CFCOST_KEYS_TAG_LEN);
    p = key + CFCOST_KEYS_TAG_LEN;

    for (i = 0, k = 0; i < CFCOST_APIKEY_RANDOM_LEN; k++) {
        if (k == n) {
            key[CFCOST_KEYS_TAG_LEN + i] = '\0';
            return -1;
        }

        if (rnd[k] < CFCOST_KEYS_BASE62_LIMIT) {
            p[i++] = cfcost_keys_base62[rnd[k] % 62];
        }
    }

    key[CFCOST_KEYS_KEY_LEN] = '\0';
    return 0;
}


void
cfcost_keys_id(char *id, const unsigned char *rnd)
{
    memcpy(id, CFCOST_KEYID_TAG, sizeof(CFCOST_KEYID_TAG) - 1);
    cfcost_keys_hex(id + sizeof(CFCOST_KEYID_TAG) - 1, rnd,
                    CFCOST_KEYS_ID_RANDOM);
}


int
cfcost_keys_valid(const char *s, size_t len)
{
    size_t  i;

    if (len != CFCOST_KEYS_KEY_LEN
        || memcmp(s, CFCOST_APIKEY_TAG, CFCOST_KEYS_TAG_LEN) != 0)
    {
        return 0;
    }

    for (i = CFCOST_KEYS_TAG_LEN; i < len; i++) {
        if (s[i] == '\0' || strchr(cfcost_keys_base62, s[i]) == NULL) {
            return 0;
        }
    }

    return 1;
}


void
cfcost_keys_prefix(char *prefix, const char *key)
{
    memcpy(prefix, key, CFCOST_APIKEY_SHOWN_PREFIX);
    prefix[CFCOST_APIKEY_SHOWN_PREFIX] = '\0';
}


int
cfcost_keys_sha256(const char *key, size_t len, unsigned char *md)
{
    static EVP_MD      *sha256;
    static EVP_MD_CTX  *ctx;

    if (sha256 == NULL) {
        sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
        ctx = EVP_MD_CTX_new();

        if (sha256 == NULL || ctx == NULL) {
            EVP_MD_free(sha256);
            EVP_MD_CTX_free(ctx);
            sha256 = NULL;
            ctx = NULL;
            return -1;
        }
    }

    if (EVP_DigestInit_ex(ctx, sha256, NULL) != 1
        || EVP_DigestUpdate(ctx, key, len) != 1
        || EVP_DigestFinal_ex(ctx, md, NULL) != 1)
    {
        return -1;
    }

    return 0;
}


int
cfcost_keys_sha256_hex(const char *key, size_t len, char *hex)
{
    unsigned char  md[CFCOST_KEYS_SHA256_LEN];

    if (cfcost_keys_sha256(key, len, md) != 0) {
        return -1;
    }

    cfcost_keys_hex(hex, md, sizeof(md));
    return 0;
}


size_t
cfcost_keys_record(char *name, const char *hex)
{
    memcpy(name, CFCOST_KEY_PREFIX, sizeof(CFCOST_KEY_PREFIX) - 1);
    memcpy(name + sizeof(CFCOST_KEY_PREFIX) - 1, hex, CFCOST_KEYS_HASH_HEX);
    name[CFCOST_KEYS_RECORD_LEN] = '\0';

    return CFCOST_KEYS_RECORD_LEN;
}


int
cfcost_keys_user_valid(const char *s, size_t len)
{
    size_t  i;
    char    c;

    if (len < 1 || len > CFCOST_KEYS_USER_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = s[i];

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
              || (c >= '0' && c <= '9')
              || c == '.' || c == '_' || c == '@' || c == '-'))
        {
            return 0;
        }
    }

    return 1;
}


/*
 * Returns 1 when s[0..len), free of control characters, is valid UTF-8.
 * cfcost_json_quote() holds the project's one definition of valid UTF-8:
 * it keeps valid sequences as they are, adds one byte for each '"' and
 * '\\', and turns each invalid byte into the 3 bytes of U+FFFD, so its
 * output is exactly len + quotes + backslashes long when nothing was
 * invalid.
 */
static int
cfcost_keys_utf8(const char *s, size_t len)
{
    size_t  i, escaped;

    escaped = 0;

    for (i = 0; i < len; i++) {
        escaped += (s[i] == '"' || s[i] == '\\');
    }

    return cfcost_json_quote_len(s, len) == len + escaped;
}


const char *
cfcost_keys_label_invalid(const char *s, size_t len)
{
    size_t         i;
    unsigned char  c;

    if (len > CFCOST_KEYS_LABEL_MAX) {
        return "is longer than 128 bytes";
    }

    for (i = 0; i < len; i++) {
        c = (unsigned char) s[i];

        /* U+0080..U+009F are encoded as C2 80..C2 9F */
        if (c < 0x20 || c == 0x7f
            || (c == 0xc2 && i + 1 < len
                && (unsigned char) s[i + 1] >= 0x80
                && (unsigned char) s[i + 1] <= 0x9f))
        {
            return "contains a control character";
        }
    }

    if (!cfcost_keys_utf8(s, len)) {
        return "is not valid UTF-8";
    }

    return NULL;
}


int
cfcost_keys_active(const char *v, size_t len)
{
    return v != NULL && len == 1 && v[0] == '0';
}
