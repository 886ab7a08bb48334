# API keys: both header forms, missing/unknown/malformed/revoked keys, no
# record for a 401, and every 401 is JSON {"detail": "..."}.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep time);
use CfcostTest;
use CfcostWire ();

my $env = CfcostTest->start;

my $alice = $env->create_key(user => 'alice');
my $bob   = $env->create_key(user => 'bob', name => 'bob laptop');
isnt($alice->{key}, $bob->{key}, 'two keys differ');

my $content = 'auth test [emu:usage 3 4]';
my $unknown = 'cfk_' . ('A' x 32);

my @cases = (
    {
        name   => 'X-API-Key',
        chat   => { key => $alice->{key}, content => $content },
        status => 200,
        json   => { input_tokens => 3, output_tokens => 4 },
        record => { user => 'alice', key_id => $alice->{id}, status => '200' },
        upstream => { path => qr{/ai/run/} },
    },
    {
        name   => 'Authorization: Bearer',
        chat   => { key => $bob->{key}, auth => 'bearer', content => $content },
        status => 200,
        record => { user => 'bob', key_id => $bob->{id}, status => '200' },
    },
    {
        name   => 'no key',
        chat   => { content => $content },
        status => 401, upstream => 'none', record => 'none',
    },
    {
        name   => 'unknown well-formed key',
        chat   => { key => $unknown, content => $content },
        status => 401, upstream => 'none', record => 'none',
    },
    {
        name   => 'unknown key via Bearer',
        chat   => { key => $unknown, auth => 'bearer', content => $content },
        status => 401, upstream => 'none', record => 'none',
    },
    {
        name   => 'malformed key',
        chat   => { key => 'not a key at all', content => $content },
        status => 401, upstream => 'none', record => 'none',
    },
    {
        name   => 'empty X-API-Key',
        chat   => { key => '', content => $content },
        status => 401, upstream => 'none', record => 'none',
    },
    {
        name   => 'Authorization: Basic',
        chat   => { headers => { Authorization => 'Basic ' . $alice->{key} },
                    content => $content },
        status => 401, upstream => 'none', record => 'none',
    },
    {
        name   => 'Bearer without a token',
        chat   => { headers => { Authorization => 'Bearer' }, content => $content },
        status => 401, upstream => 'none', record => 'none',
    },
    {
        name   => 'key with a trailing character',
        chat   => { key => $alice->{key} . 'x', content => $content },
        status => 401, upstream => 'none', record => 'none',
    },
    {
        name   => 'key id instead of key',
        chat   => { key => $alice->{id}, content => $content },
        status => 401, upstream => 'none', record => 'none',
    },
    {
        name   => 'no key and an invalid body',
        http   => [POST => '/api/ai/chat',
                   headers => { 'Content-Type' => 'application/json' },
                   body => '{"model":'],
        status => 401, upstream => 'none', record => 'none',
    },
);

$env->run_case($_) for @cases;

# --- 401s leave no record at all: only the two 200s are in the stream
my $recs = $env->wait_records(2, 5);
sleep 0.3;
$recs = $env->records;
is(scalar @$recs, 2, 'only the authenticated requests left records');
ok(!(grep { ($_->{status} // '') eq '401' } @$recs), 'no record with status 401');

# --- revocation is seen within the cache TTL (1 s) + margin
my $carol = $env->create_key(user => 'carol');
my $r = $env->chat(key => $carol->{key}, content => $content);
is($r->{status}, 200, 'carol: 200 before revoke');
my $n_before = scalar @{ $env->wait_records(3, 5) };

$env->revoke_key($carol->{id});
my $t0 = time;
my $right_after = $env->chat(key => $carol->{key}, content => $content);
ok($right_after->{status} == 200 || $right_after->{status} == 401,
    "right after revoke: 200 (cached) or 401, got $right_after->{status}");
sleep 1.1 - (time - $t0) if time - $t0 < 1.1;
my $later = $env->chat(key => $carol->{key}, content => $content);
is($later->{status}, 401, 'revoked key: 401 within 1.5 s of the revoke');
ok(ref $later->{json} eq 'HASH' && defined $later->{json}{detail}
    && !ref $later->{json}{detail}, 'revoked key: JSON detail')
    or diag($later->{body});
ok(time - $t0 < 1.5, 'the 401 came within 1.5 s');
my $again = $env->chat(key => $carol->{key}, content => $content);
is($again->{status}, 401, 'revoked key: still 401');

# other keys unaffected
is($env->chat(key => $alice->{key}, content => $content)->{status}, 200,
    'alice unaffected by carol\'s revoke');

# records: carol's first request, maybe the right-after one, alice's last;
# none with status 401
my $want = $n_before + 1 + ($right_after->{status} == 200 ? 1 : 0);
$recs = $env->wait_records($want, 5);
sleep 0.3;
$recs = $env->records;
is(scalar @$recs, $want, 'revoked-key 401s left no record');
ok(!(grep { ($_->{status} // '') eq '401' } @$recs), 'still no 401 record');

# --- RFC 9110 header values: optional white space (SP, HTAB) around them is
# not part of the key, and an empty X-API-Key is no header at all (so a
# valid Authorization still counts).  These requests go upstream and leave
# records: counted apart from the ones above.
{
    my $KEY = $alice->{key};
    my $body = '{"model":"@cf/meta/llama-3.1-8b-instruct","messages":'
             . '[{"role":"user","content":"hi [emu:usage 1 1]"}]}';
    my @ct = ('Content-Type' => 'application/json');
    for my $c (["X-API-Key with a tab before the key", 'X-API-Key' => "\t$KEY"],
               ["X-API-Key with a tab after the key", 'X-API-Key' => "$KEY\t"],
               ["an empty X-API-Key, then Bearer",
                'X-API-Key' => '', Authorization => "Bearer $KEY"],
               ["Bearer and a tab", Authorization => "Bearer\t$KEY"],
               ["bearer in lower case, spaces around",
                Authorization => "bearer   $KEY \t"])
    {
        my ($name, @h) = @$c;
        my $r = CfcostWire::request($env->port, 'POST', '/api/ai/chat', $body,
                                    @ct, @h);
        is($r->{status}, 200, "header OWS: $name: 200")
            or diag($r->{body});
    }
    for my $c (["only an empty X-API-Key", 'X-API-Key' => ''],
               ["Bearer without a key", Authorization => "Bearer \t"],
               ["Bearerkey glued", Authorization => "Bearer$KEY"])
    {
        my ($name, @h) = @$c;
        my $r = CfcostWire::request($env->port, 'POST', '/api/ai/chat', $body,
                                    @ct, @h);
        is($r->{status}, 401, "header OWS: $name: 401");
    }
}

$env->done;
done_testing;
