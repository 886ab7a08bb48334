/*
 * Unit tests for common/cfcost_keys.c: SHA-256 against known vectors (and
 * sha256sum, which `make run` uses to find the demo key's record), keys
 * and key ids from given random bytes, the key format, user names,
 * labels, and the revoked field.
 */

#include <stdio.h>
#include <string.h>

#include "cfcost_keys.h"
#include "tap.h"


typedef struct {
    const char  *text;
    const char  *hex;
} hcase_t;


#define NCASES(a)  (sizeof(a) / sizeof((a)[0]))


static const hcase_t  sha_cases[] = {
    /* FIPS 180-2 examples */
    { "",
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
    { "abc",
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
    { "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1" },
    /* a key: printf %s KEY | sha256sum */
    { "cfk_m9gEeqPLVTg1dWZL9S2D0bUKOryNOwyC",
      "c79b3e146df356af21dd8fff0d6cbd0001a2c6752e72ed3a8b7b19a71c1306b4" },
};


static void
test_sha256(void)
{
    size_t         i, k;
    char           hex[CFCOST_KEYS_HASH_HEX + 1], again[3];
    unsigned char  md[CFCOST_KEYS_SHA256_LEN];

    for (i = 0; i < NCASES(sha_cases); i++) {
        ok(cfcost_keys_sha256_hex(sha_cases[i].text,
                                  strlen(sha_cases[i].text), hex) == 0,
           "sha256_hex(\"%.12s...\") succeeds", sha_cases[i].text);
        is_str(hex, sha_cases[i].hex, "sha256(\"%.12s...\")",
               sha_cases[i].text);

        /* the raw digest is the same bytes */
        cfcost_keys_sha256(sha_cases[i].text, strlen(sha_cases[i].text), md);

        for (k = 0; k < sizeof(md); k++) {
            snprintf(again, sizeof(again), "%02x", md[k]);

            if (memcmp(again, sha_cases[i].hex + 2 * k, 2) != 0) {
                break;
            }
        }

        ok(k == sizeof(md), "raw digest of \"%.12s...\" matches its hex",
           sha_cases[i].text);
    }

    /* the bytes as given: a NUL is hashed, nothing past len is */
    cfcost_keys_sha256_hex("abcXYZ", 3, hex);
    is_str(hex, sha_cases[1].hex, "only len bytes are hashed");

    cfcost_keys_sha256_hex("\0", 1, hex);
    is_str(hex,
           "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
           "a NUL byte is hashed like any other");
}


static void
test_generate(void)
{
    size_t         i, count[62];
    char           key[CFCOST_KEYS_KEY_LEN + 1];
    unsigned char  rnd[256], skip[40];

    static const char  base62[] =
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

    for (i = 0; i < 256; i++) {
        rnd[i] = (unsigned char) i;
    }

    ok(cfcost_keys_generate(key, rnd, 32) == 0, "32 usable bytes make a key");
    is_str(key, "cfk_0123456789ABCDEFGHIJKLMNOPQRSTUV", "bytes 0..31");
    is_u64(strlen(key), 36, "a key is 36 characters");
    ok(cfcost_keys_valid(key, strlen(key)), "a made key has a key's form");

    ok(cfcost_keys_generate(key, rnd + 30, 32) == 0, "bytes 30..61");
    is_str(key, "cfk_UVWXYZabcdefghijklmnopqrstuvwxyz", "62 values, 62 chars");

    /* 62..123 wrap around the alphabet: 62 -> '0' */
    ok(cfcost_keys_generate(key, rnd + 62, 32) == 0
       && strcmp(key, "cfk_0123456789ABCDEFGHIJKLMNOPQRSTUV") == 0,
       "62 -> '0': byte mod 62");

    /* 248..255 are drawn again */
    for (i = 0; i < 8; i++) {
        skip[i] = (unsigned char) (248 + i);
    }

    skip[8] = 247;

    for (i = 9; i < sizeof(skip); i++) {
        skip[i] = (unsigned char) (i - 9);
    }

    ok(cfcost_keys_generate(key, skip, sizeof(skip)) == 0,
       "248..255, 247, 0..30");
    is_str(key, "cfk_z0123456789ABCDEFGHIJKLMNOPQRSTU",
           "248..255 skipped, 247 -> 'z'");

    ok(cfcost_keys_generate(key, rnd + 224, 32) == -1,
       "24 usable bytes in 32 are too few");
    ok(cfcost_keys_generate(key, rnd, 31) == -1, "31 bytes are too few");

    /* every character equally likely: 248 = 4 x 62 */
    memset(count, 0, sizeof(count));
    memset(rnd, 0, sizeof(rnd));

    for (i = 0; i < 248; i++) {
        rnd[0] = (unsigned char) i;
        cfcost_keys_generate(key, rnd, 32);
        count[strchr(base62, key[4]) - base62]++;
    }

    for (i = 0; i < 62 && count[i] == 4; i++) {
        /* void */
    }

    ok(i == 62, "over bytes 0..247 each character comes 4 times");
}


static void
test_format(void)
{
    char                 id[CFCOST_KEYS_ID_LEN + 1];
    char                 prefix[CFCOST_APIKEY_SHOWN_PREFIX + 1];
    char                 record[CFCOST_KEYS_RECORD_LEN + 1];
    const char          *key = "cfk_m9gEeqPLVTg1dWZL9S2D0bUKOryNOwyC";
    const unsigned char  rnd[6] = { 0x01, 0x23, 0x45, 0x67, 0x89, 0xab };

    cfcost_keys_id(id, rnd);
    is_str(id, "key_0123456789ab", "a key id is key_ + 12 lowercase hex");

    cfcost_keys_prefix(prefix, key);
    is_str(prefix, "cfk_m9gEeqPL", "lists show cfk_ + 8");

    is_u64(cfcost_keys_record(record, sha_cases[3].hex), 75,
           "a record name is 75 bytes");
    is_str(record, "cfcost:key:" "c79b3e146df356af21dd8fff0d6cbd00"
                   "01a2c6752e72ed3a8b7b19a71c1306b4",
           "a record is named cfcost:key:<sha256 hex>");

    ok(cfcost_keys_valid(key, 36), "a key is valid");
    ok(!cfcost_keys_valid(key, 35), "one character short");
    ok(!cfcost_keys_valid("cfk_m9gEeqPLVTg1dWZL9S2D0bUKOryNOwyCx", 37),
       "one character long");
    ok(!cfcost_keys_valid("cfx_m9gEeqPLVTg1dWZL9S2D0bUKOryNOwyC", 36),
       "another tag");
    ok(!cfcost_keys_valid("cfk_m9gEeqPLVTg1dWZL9S2D0bUKOryNOwy-", 36),
       "'-' is not base62");
    ok(!cfcost_keys_valid("cfk_m9gEeqPLVTg1dWZL9S2D0bUKOryNOwy\0", 36),
       "a NUL is not base62");
    ok(!cfcost_keys_valid("key_0123456789ab", 16), "a key id is not a key");
}


static void
test_user(void)
{
    char  s[80];

    ok(cfcost_keys_user_valid("alice", 5), "alice");
    ok(cfcost_keys_user_valid("x@y.z_-.0", 9), "all the punctuation allowed");
    ok(cfcost_keys_user_valid("a", 1), "one character");
    ok(!cfcost_keys_user_valid("", 0), "empty");
    ok(!cfcost_keys_user_valid("a b", 3), "a space");
    ok(!cfcost_keys_user_valid("a/b", 3), "a slash");
    ok(!cfcost_keys_user_valid("a:b", 3), "a colon");
    ok(!cfcost_keys_user_valid("\xc3\xa9", 2), "non-ASCII");
    ok(!cfcost_keys_user_valid("a\0b", 3), "a NUL");

    memset(s, 'u', sizeof(s));
    ok(cfcost_keys_user_valid(s, 64), "64 characters");
    ok(!cfcost_keys_user_valid(s, 65), "65 characters");
}


/* Checks one label: want NULL (accepted) or a word of the reason. */
static void
label(const char *s, size_t len, const char *want, const char *what)
{
    const char  *why;

    why = cfcost_keys_label_invalid(s, len);

    if (want == NULL) {
        if (!ok(why == NULL, "label %s: accepted", what)) {
            diag("refused: %s", why);
        }

        return;
    }

    if (!ok(why != NULL && strstr(why, want) != NULL, "label %s: %s", what,
            want))
    {
        diag("got: %s", why ? why : "accepted");
    }
}


#define LABEL(s, want, what)  label(s, sizeof(s) - 1, want, what)


static void
test_label(void)
{
    char  s[200];

    LABEL("", NULL, "empty");
    LABEL("laptop", NULL, "ASCII");
    LABEL("\xc3\xa9 \"q\" \\\\ \xc3\xbcn\xc3\xaf", NULL, "quotes, backslashes");
    LABEL("\xe2\x82\xac \xf0\x9f\x94\x91", NULL, "3- and 4-byte UTF-8");
    LABEL("\xc2\xa0", NULL, "U+00A0 (not C1)");
    LABEL("\xef\xbf\xbd", NULL, "U+FFFD itself");
    LABEL("\xf4\x8f\xbf\xbf", NULL, "U+10FFFF");

    LABEL("a\x01", "control", "C0");
    LABEL("a\tb", "control", "tab");
    LABEL("a\nb", "control", "newline");
    LABEL("a\x7f", "control", "DEL");
    LABEL("\xc2\x80", "control", "U+0080 (C1)");
    LABEL("\xc2\x9f", "control", "U+009F (C1)");
    LABEL("a\0b", "control", "NUL");

    LABEL("\xff", "UTF-8", "0xFF");
    LABEL("\x80", "UTF-8", "a lone continuation byte");
    LABEL("\xc0\x80", "UTF-8", "overlong NUL");
    LABEL("\xe0\x80\xaf", "UTF-8", "overlong slash");
    LABEL("\xed\xa0\x80", "UTF-8", "a surrogate");
    LABEL("\xf4\x90\x80\x80", "UTF-8", "above U+10FFFF");
    LABEL("\xf5\x80\x80\x80", "UTF-8", "F5");
    LABEL("\xe2\x82", "UTF-8", "truncated");
    LABEL("ok\xc2", "UTF-8", "truncated at the end");

    memset(s, 'l', sizeof(s));
    label(s, 128, NULL, "of 128 bytes");
    label(s, 129, "longer than 128", "of 129 bytes");
}


static void
test_active(void)
{
    ok(cfcost_keys_active("0", 1), "revoked \"0\": active");
    ok(!cfcost_keys_active("1", 1), "revoked \"1\": revoked");
    ok(!cfcost_keys_active(NULL, 0), "no field: revoked");
    ok(!cfcost_keys_active("", 0), "empty: revoked");
    ok(!cfcost_keys_active("00", 2), "\"00\": revoked");
    ok(!cfcost_keys_active("0 ", 2), "\"0 \": revoked");

    ok(strstr(cfcost_keys_revoke_lua, "'" CFCOST_KEY_F_REVOKED "', '1'")
       != NULL, "the revoke script sets the schema's revoked field to 1");
}


int
main(void)
{
    test_sha256();
    test_generate();
    test_format();
    test_user();
    test_label();
    test_active();

    return done_testing();
}
