# Redis goes away: requests with an already-known key keep working from the
# key cache, their records wait in the worker queue, and reach Redis once it
# is back (an empty Redis on the same port).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep time);
use CfcostTest;

my $env = CfcostTest->start;
my $k = $env->create_key(user => 'resilient');

# records land while Redis is up
my @ids;
for my $i (1 .. 3) {
    my $r = $env->chat(key => $k->{key}, content => "before $i [emu:usage 1 $i]");
    is($r->{status}, 200, "before outage $i: 200");
}
my $recs = $env->wait_records(3, 5);
is(scalar @$recs, 3, 'three records before the outage');

$env->stop_redis;
ok(ref $env->redis('PING') eq 'HASH', 'redis is down');

# let the cached identity pass its TTL (1 s): what serves the key now is the
# stale entry, since Redis cannot be asked
sleep 1.2;

my %outage;
for my $i (1 .. 5) {
    my $t0 = time;
    my $r = $env->chat(key => $k->{key}, content => "during $i [emu:usage 10 $i]",
        timeout => 15);
    is($r->{status}, 200, "during outage $i: 200")
        or diag($r->{body});
    my $id = $r->{headers}{'x-cfcost-request-id'} // '';
    like($id, qr/^[0-9a-f]{32}$/, "during outage $i: request id");
    $outage{$id} = $i;
    cmp_ok(time - $t0, '<', 3, "during outage $i: answered within 3 s");
}

# an unknown key cannot be checked while Redis is down: it must not pass
my $u = $env->chat(key => 'cfk_' . ('Z' x 32), content => 'who [emu:usage 1 1]',
    timeout => 15);
ok($u->{status} == 401 || $u->{status} == 503,
    "unknown key during the outage: 401 or 503, got $u->{status}");
ok(ref $u->{json} eq 'HASH' && defined $u->{json}{detail}, 'unknown key: JSON detail');

sleep 0.5;
$env->start_redis;                       # empty: no keys, no records

$recs = $env->wait_records(5, 5);
is(scalar @$recs, 5, 'the five outage records arrive within 5 s of Redis returning');
sleep 0.5;
$recs = $env->records;
is(scalar @$recs, 5, 'exactly five (none duplicated, no 401 record)');
for my $rec (@$recs) {
    my $i = $outage{ $rec->{request_id} // '' };
    ok($i, "record $rec->{request_id} is one of the outage requests") or next;
    is($rec->{status}, '200', "outage record $i: status");
    is($rec->{user}, 'resilient', "outage record $i: user");
    is($rec->{key_id}, $k->{id}, "outage record $i: key id");
    is($rec->{input_tokens}, '10', "outage record $i: input tokens");
    is($rec->{output_tokens}, "$i", "outage record $i: output tokens");
    is($rec->{cost_pusd}, 10 * 282000 + $i * 827000, "outage record $i: cost");
}

my $dropped = $env->redis('HGET', 'cfcost:gateway', 'records_dropped');
ok(!defined $dropped || $dropped eq '0', 'no record dropped');

# Redis connection failures are expected in the log
$env->allow_error(qr/redis|Redis|6379|connect\(\) .*failed|Connection refused|Connection reset/);
$env->done;
done_testing;
