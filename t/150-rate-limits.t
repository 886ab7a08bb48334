# Requests a minute per API key and per user (cfcost limits set).
#
#   - a key limited to N: N requests pass at once with the x-ratelimit-*
#     headers counting down, the next is a 429 in the route's shape with
#     Retry-After, recorded as rate_limited at no cost, before anything
#     goes upstream; other keys are not affected;
#   - a user's limit is shared by all its keys, and copied into keys made
#     after it; removing a limit (0) lifts it within the key cache's ttl;
#   - two gateways on one Redis share the limits: a burst of concurrent
#     requests across both passes exactly N (plus what GCRA's rate lets
#     through while the burst lasts);
#   - Redis gone: requests go on unlimited, with a warning;
#   - the CLI checks its arguments and lists the limits.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time sleep);
use JSON::PP;
use CfcostTest;

my $MODEL = '@cf/meta/llama-3.1-8b-instruct';
my $JSON  = JSON::PP->new->utf8->canonical;

my $env = CfcostTest->start(workers => 2, aggregator => 0);

sub limit {
    my (@args) = @_;
    my ($rc, $out, $err) = $env->cli('limits', 'set', @args);
    is($rc, 0, "limits set @args") or diag("$out$err");
    return $out;
}

# a key's cached entry must expire before a new limit shows (ttl=1s)
sub settle { sleep 1.3 }

# ---------------------------------------------------------------- one key

my $k1 = $env->create_key(user => 'alice');
my $k2 = $env->create_key(user => 'bob');

like(limit('--key', $k1->{id}, '--rpm', 3), qr/at most 3 requests a minute/,
     'the CLI says what it set');
is($env->redis('HGET', "cfcost:key:$k1->{hash}", 'rpm'), '3',
   'the limit is in the key record');
settle();

my @rem;
for my $i (1 .. 3) {
    my $r = $env->chat(key => $k1->{key});
    is($r->{status}, 200, "request $i of 3 passes");
    is($r->{headers}{'x-ratelimit-limit-requests'}, '3', 'limit header');
    push @rem, $r->{headers}{'x-ratelimit-remaining-requests'};
    like($r->{headers}{'x-ratelimit-reset-requests'} // '', qr/^\d+(ms|s|m\d+s)$/,
         'reset header, in OpenAI\'s form');
}
is("@rem", '2 1 0', 'remaining counts down');

my $before = $env->redis('GET', 'cfcost:rl:key:' . $k1->{id});

my $r = $env->chat(key => $k1->{key});
is($r->{status}, 429, 'the fourth is refused');
like($r->{json}{detail} // '', qr/rate limit reached: 3 requests a minute for this API key/,
     'with a clear message');
ok(($r->{headers}{'retry-after'} // 0) >= 1, 'and Retry-After')
    or diag(explain($r->{headers}));
is($r->{headers}{'x-ratelimit-remaining-requests'}, '0', 'remaining 0');
ok(defined $r->{headers}{'x-cfcost-request-id'}, 'a request id');
is($env->redis('GET', 'cfcost:rl:key:' . $k1->{id}), $before,
   'a refused request uses none of the limit');

# the upstream's own x-ratelimit headers (the operator's account) give way
my $k5_id;
{
    my $k5 = $env->create_key(user => 'frank');
    $k5_id = $k5->{id};
    limit('--key', $k5->{id}, '--rpm', 50);
    settle();
    my $s = $env->chat(key => $k5->{key},
                       content => 'hi [emu:headers] [emu:usage 3 4]');
    is($s->{status}, 200, 'a limited key, the upstream sending its own');
    is($s->{headers}{'x-ratelimit-limit-requests'}, '50',
       'one x-ratelimit-limit-requests: ours')
        or diag(explain($s->{headers}));
    is($s->{headers}{'x-ratelimit-remaining'}, '41',
       'the upstream\'s other rate headers still pass');
}

# the other routes' shapes
$r = $env->chat(key => $k1->{key}, auth => 'bearer',
                path => '/v1/chat/completions');
is($r->{status}, 429, '/v1: 429');
is($r->{json}{error}{type}, 'rate_limit_error', "/v1: OpenAI's error object");
$r = $env->chat(key => $k1->{key}, auth => 'bearer',
                path => "/client/v4/accounts/test-account/ai/run/$MODEL",
                body => { messages => [{ role => 'user', content => 'x' }] });
is($r->{status}, 429, 'native: 429');
is($r->{json}{success}, JSON::PP::false, "native: Cloudflare's envelope");

# another key is not limited
for (1 .. 5) {
    $r = $env->chat(key => $k2->{key});
    last if $r->{status} != 200;
}
is($r->{status}, 200, 'a key without a limit: not limited');
ok(!exists $r->{headers}{'x-ratelimit-limit-requests'},
   'and no x-ratelimit headers');

# records: the refusals are there, not billed
my $recs = $env->wait_records(11 + 5);
my @limited = grep { ($_->{error} // '') eq 'rate_limited' } @$recs;
is(scalar @limited, 3, 'three records of rate_limited requests');
ok(!grep({ $_->{status} != 429 || $_->{cost_pusd} != 0
           || $_->{upstream_status} != 0 } @limited),
   'each a 429, at no cost, nothing sent upstream');

# ---------------------------------------------------------------- a user

my $c1 = $env->create_key(user => 'carol');
like(limit('--user', 'carol', '--rpm', 4), qr/carol: at most 4 .*\(1 key\)/,
     'a user limit, copied into the user\'s one key');
my $c2 = $env->create_key(user => 'carol');
is($env->redis('HGET', "cfcost:key:$c2->{hash}", 'user_rpm'), '4',
   'a key made afterwards carries it too');
settle();

my %st;
for my $i (1 .. 6) {
    my $k = ($i % 2) ? $c1 : $c2;
    $r = $env->chat(key => $k->{key});
    $st{$r->{status}}++;
    like($r->{json}{detail} // '', qr/for this user/, 'the user\'s limit refused')
        if $r->{status} == 429 && !$st{seen}++;
}
is($st{200}, 4, 'four requests of the user pass, across its two keys');
is($st{429}, 2, 'the rest are refused');

# lifting it
limit('--user', 'carol', '--rpm', 0);
is($env->redis('HGET', "cfcost:key:$c1->{hash}", 'user_rpm'), undef,
   'removed from the keys');
settle();
$r = $env->chat(key => $c1->{key});
is($r->{status}, 200, 'no limit once removed');

# ---------------------------------------------------------------- the CLI

my ($rc, $out, $err) = $env->cli('limits', 'list', '--json');
is($rc, 0, 'limits list --json');
my $list = eval { $JSON->decode($out) } // {};
is_deeply($list->{keys}, [{ id => $k1->{id}, user => 'alice', rpm => 3 },
                          { id => $k5_id, user => 'frank', rpm => 50 }],
          'lists the key limits, oldest key first');
is_deeply($list->{users}, [], 'and no user limit now');
for my $bad (['--key', $k1->{id}, '--rpm', '-1'],
             ['--key', $k1->{id}, '--rpm', '1000001'],
             ['--key', $k1->{id}, '--rpm', '1e3'],
             ['--key', $k1->{id}],
             ['--user', 'x', '--key', $k1->{id}, '--rpm', 1],
             ['--user', 'bad name', '--rpm', 1],
             ['--key', 'cfk_notanid', '--rpm', 1])
{
    ($rc, $out, $err) = $env->cli('limits', 'set', @$bad);
    is($rc, 2, "limits set @$bad: a usage error") or diag("$out$err");
}
($rc, $out, $err) = $env->cli('limits', 'set', '--key', 'key_000000000000',
                              '--rpm', 1);
is($rc, 1, 'an unknown key id fails');
like($err, qr/no such key id/, 'and says so');

# ------------------------------------------------- two gateways, one limit

my $k3 = $env->create_key(user => 'dave');
limit('--key', $k3->{id}, '--rpm', 20);
settle();

my $port2 = $env->start_second_nginx;
my @socks;
my $req = $JSON->encode({ model => $MODEL,
                          messages => [{ role => 'user', content => 'hi' }] });
my $t0 = time;
for my $i (1 .. 60) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => ($i % 2 ? $env->port : $port2), Proto => 'tcp')
        or die "connect: $!";
    print $s "POST /api/ai/chat HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
           . "X-API-Key: $k3->{key}\r\nContent-Type: application/json\r\n"
           . "Content-Length: " . length($req) . "\r\n\r\n$req";
    push @socks, $s;
}
my %burst;
for my $s (@socks) {
    local $/;
    my $resp = <$s> // '';
    my ($code) = $resp =~ m{^HTTP/1\.1 (\d+)};
    $burst{$code // 'none'}++;
}
my $elapsed = time - $t0;
my $extra = int($elapsed / 3);            # one more every 60/20 s
ok($burst{200} >= 20 && $burst{200} <= 20 + $extra + 1,
   "a burst of 60 across two gateways: $burst{200} passed in "
   . sprintf('%.2f s', $elapsed) . " (limit 20)")
    or diag(explain(\%burst));
is(($burst{200} // 0) + ($burst{429} // 0), 60, 'the rest were refused')
    or diag(explain(\%burst));

# ------------------------------------------------ checks go in batches

# Redis held 25 ms (less than the gateway's 50 ms patience) while 10
# requests of one key come: each worker's first check waits in Redis, the
# others wait for it and then go together -- at most two script calls a
# worker, and the count exact
{
    my $k6 = $env->create_key(user => 'gina');
    limit('--key', $k6->{id}, '--rpm', 5);
    settle();
    is($env->chat(key => $k6->{key})->{status}, 200, 'one request first');
    $env->redis('CONFIG', 'RESETSTAT');
    my $adm = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $env->redis_port, Proto => 'tcp') or die "redis: $!";
    my ($u, $pw) = ('default', $env->{redis_admin_pass});
    print $adm "AUTH $u $pw\r\n";
    my $ok = <$adm>;
    like($ok, qr/^\+OK/, 'an admin connection');
    print $adm "DEBUG SLEEP 0.025\r\n";
    my @s;
    for my $i (1 .. 10) {
        my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
            PeerPort => $env->port, Proto => 'tcp') or die "connect: $!";
        print $c "POST /api/ai/chat HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
               . "X-API-Key: $k6->{key}\r\nContent-Type: application/json\r\n"
               . "Content-Length: " . length($req) . "\r\n\r\n$req";
        push @s, $c;
    }
    my %got;
    for my $c (@s) {
        local $/;
        my ($code) = (<$c> // '') =~ m{^HTTP/1\.1 (\d+)};
        $got{$code // 'none'}++;
    }
    <$adm>;
    is($got{200}, 4, 'four more pass (five a minute)') or diag(explain(\%got));
    is($got{429}, 6, 'six are refused');
    my $info = $env->redis('INFO', 'commandstats');
    my $calls = 0;
    $calls += $1 while $info =~ /^cmdstat_eval(?:sha)?:calls=(\d+)/mg;
    ok($calls >= 1 && $calls <= 4,
       "10 checks in $calls script calls (2 workers, at most 2 each)");
    unlike($env->error_log, qr/rate limits not checked \(Redis is slow/,
           'none waited past the patience');
}

# ---------------------------------------------------------------- Redis gone

$env->redis('SAVE');                    # keys and limits come back from it
$env->stop_redis;
$r = $env->chat(key => $k1->{key});
is($r->{status}, 200, 'Redis down: a limited key is served from the cache, '
                      . 'unlimited');
like($env->error_log, qr/\[warn\].*rate limits not checked/,
     'and the error log says the limits were not checked');
$env->start_redis;

# a restarted Redis has no script cached: EVALSHA answers NOSCRIPT and the
# gateway sends EVAL
my $k4 = $env->create_key(user => 'erin');
limit('--key', $k4->{id}, '--rpm', 2);
my $until = time + 15;
while (time < $until) {
    $r = $env->chat(key => $k4->{key});
    last if defined $r->{headers}{'x-ratelimit-remaining-requests'};
    sleep 0.2;
}
is($r->{headers}{'x-ratelimit-remaining-requests'}, '1',
   'Redis back, with no script cached: counted again');
$r = $env->chat(key => $k4->{key});
is($r->{status}, 200, 'up to the limit');
$r = $env->chat(key => $k4->{key});
is($r->{status}, 429, 'and no further');

$env->allow_error(qr/redis|Redis|connect/);
$env->done;
done_testing();
