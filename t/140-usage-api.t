#!/usr/bin/perl
# The usage API end to end: requests through the gateway, records through
# the aggregator, numbers back through nginx with the caller's identity.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use CfcostTest;

my $env = CfcostTest->start(aggregator => 1);
my $alice = $env->create_key(user => 'alice');
my $bob   = $env->create_key(user => 'bob');
my $L8 = '@cf/meta/llama-3.1-8b-instruct';

sub usage {
    my ($key, $query, %h) = @_;
    return $env->http('GET', '/api/usage' . ($query // ''),
        headers => { ($key ? ('X-API-Key' => $key) : ()), %h });
}

# polls until the caller's total_requests reaches $n (at most $t s)
sub wait_total {
    my ($key, $n, $t) = @_;
    my $until = time + $t;
    my $r;
    do {
        $r = usage($key);
        return ($r, time) if $r->{json} && ($r->{json}{total_requests} // 0) >= $n;
        sleep 0.02;
    } while (time < $until);
    return ($r, time);
}

# alice: three requests; bob: one
my $t0 = time;
for my $u ([1000, 2000], [10, 20], [7, 0]) {
    my $r = $env->chat(key => $alice->{key}, content => "hi [emu:usage @$u]");
    is($r->{status}, 200, "alice's chat @$u");
}
my ($r, $t1) = wait_total($alice->{key}, 3, 5);
cmp_ok($t1 - $t0, '<', 1.5, 'a key sees its own requests within a second');

my $j = $r->{json};
is($j->{total_requests}, 3, 'alice: requests');
is($j->{total_input_tokens}, 1017, 'alice: input tokens');
is($j->{total_output_tokens}, 2020, 'alice: output tokens');
# exact: (1017 * 282000 + 2020 * 827000) pusd = 0.001957334 USD
like($r->{body}, qr/"total_cost_usd":0\.001957[,}]/, 'alice: cost, 6 decimals');
is($j->{by_model}{$L8}{requests}, 3, 'alice: by model');
is($j->{user}, 'alice', 'alice: the answer names her');

$env->chat(key => $bob->{key}, content => 'yo [emu:usage 5 5]');
($r) = wait_total($bob->{key}, 1, 5);
is($r->{json}{total_requests}, 1, 'bob sees only his request');
is($r->{json}{total_input_tokens}, 5, "bob: his tokens, not alice's");

# identity comes from the key alone
$r = usage($bob->{key}, '', 'X-Cfcost-User' => 'alice', 'X-Cfcost-Admin' => '1');
is($r->{status}, 200, 'forged identity headers: still answered');
is($r->{json}{user}, 'bob', 'forged identity headers: ignored');
is($r->{json}{total_requests}, 1, 'forged identity headers: bob\'s numbers');

$r = usage($bob->{key}, '?user=alice');
is($r->{status}, 403, "a key cannot read another user's usage");

$r = usage(undef);
is($r->{status}, 401, 'no key: 401');
ok($r->{json} && $r->{json}{detail}, 'no key: JSON detail');

$r = usage('cfk_nope');
is($r->{status}, 401, 'unknown key: 401');

# the admin token sees everyone, or one user
$r = usage($env->admin_token);
is($r->{status}, 200, 'admin: 200');
is($r->{json}{total_requests}, 4, 'admin: everyone');
$r = usage($env->admin_token, '?user=alice');
is($r->{json}{total_requests}, 3, 'admin: one user');

# the admin token is no API key
$r = $env->chat(key => $env->admin_token, content => 'x');
is($r->{status}, 401, 'the admin token cannot run models');

# logs and time series through the gateway
$r = $env->http('GET', '/api/usage/logs?limit=2',
    headers => { 'X-API-Key' => $alice->{key} });
is($r->{status}, 200, 'logs: 200');
is(scalar @{ $r->{json}{logs} }, 2, 'logs: limit');
ok($r->{json}{next_cursor}, 'logs: a cursor for the rest');
is($r->{json}{logs}[0]{user}, 'alice', 'logs: her own');

$r = $env->http('GET', '/api/usage/logs?format=csv',
    headers => { 'X-API-Key' => $alice->{key} });
is($r->{status}, 200, 'csv: 200');
my @lines = split /\n/, $r->{body};
is(scalar @lines, 4, 'csv: a header and three rows');

$r = $env->http('GET', '/api/usage/timeseries?bucket=day',
    headers => { 'X-API-Key' => $alice->{key} });
is($r->{status}, 200, 'timeseries: 200');
is($r->{json}{points}[-1]{requests}, 3, 'timeseries: today holds her three');

# a revoked key loses the usage API too
$env->revoke_key($bob->{id});
sleep 1.2;
is(usage($bob->{key})->{status}, 401, 'revoked key: 401 on the usage API');

# operators' routes: /metrics needs the admin or the metrics token (a
# client on the gateway's own loopback is no operator); per-user series
# only with the aggregator's --metrics-users (not given here)
is($env->http('GET', '/metrics')->{status}, 401, '/metrics without a token: 401');
is($env->http('GET', '/metrics', headers => {
       Authorization => "Bearer $alice->{key}" })->{status},
   403, '/metrics with an API key: 403');
for my $who (['admin', $env->admin_token], ['metrics', $env->metrics_token]) {
    my ($name, $token) = @$who;
    $r = $env->http('GET', '/metrics',
                    headers => { Authorization => "Bearer $token" });
    is($r->{status}, 200, "/metrics with the $name token: 200");
    like($r->{body}, qr/^cfcost_model_requests_total\{model="\Q$L8\E"\} \d+$/m,
         "/metrics ($name): requests by model");
    unlike($r->{body}, qr/user="/, "/metrics ($name): no user names");
}
is(usage($env->metrics_token)->{status}, 401,
   'the metrics token reads no usage');
is($env->http('GET', '/healthz')->{status}, 200, '/healthz');

# the aggregator gone: a JSON 502, nothing else breaks
$env->stop_aggregator('KILL');    # its socket stays: connects are refused
$r = usage($alice->{key});
is($r->{status}, 502, 'aggregator down: 502');
ok($r->{json} && $r->{json}{detail}, 'aggregator down: JSON detail');
is($env->chat(key => $alice->{key}, content => 'still [emu:usage 1 1]')->{status},
   200, 'aggregator down: chat still served');
$env->allow_error(qr{connect\(\) to unix:\S*agg\.sock failed \(111});

$env->done;
done_testing;
