# Every worker that ever ran is a writer with a stream of its own; without
# retirement, cfcost:writers and the streams the aggregator reads grow with
# every reload and restart (and past 4,096 writers the aggregator stopped
# reading new ones).  The trim pass retires an empty stream no group needs,
# idle for longer than the retention and a day (never written: first seen
# so that long ago): the stream and its listing go in one script; its
# applied position stays, so a record of it sent again counts once.  A
# writer still
# alive whose stream was retired finds out on its next XADD (NOMKSTREAM:
# nil) and registers again with its records, in one transaction: nothing is
# lost, nothing counted twice.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use CfcostTest;

my $env = CfcostTest->start;
my $JS = JSON::PP->new->utf8->canonical;
my $k = $env->create_key(user => 'retiree');
$env->start_aggregator('--retention-days', '1', '--trim-interval', '1');

my $sent = 0;
sub chat_ok {
    my $r = $env->chat(key => $k->{key}, content => 'hi [emu:usage 10 5]');
    $sent++ if $r->{status} == 200;
    return $r->{status} == 200;
}

sub total {
    my $r = $env->http('GET', '/api/usage',
        headers => { Authorization => 'Bearer ' . $env->admin_token });
    return -1 unless $r->{status} == 200;
    return $JS->decode($r->{body})->{total_requests} // 0;
}

sub wait_for {
    my ($what, $timeout) = @_;
    my $until = time + ($timeout // 15);
    while (time < $until) {
        return 1 if $what->();
        sleep 0.1;
    }
    return 0;
}

for (1 .. 6) { chat_ok() }
is($sent, 6, 'six requests served');
ok(wait_for(sub { total() == $sent }), 'and counted');
my @live = @{ $env->redis('SMEMBERS', 'cfcost:writers') };
ok(@live >= 1, scalar(@live) . ' live writer(s) listed');

# ------------------------------------------- dead writers of the past

# 40 writers that registered and never wrote (workers that served
# nothing), and one whose only record, from 1970, is counted, then trimmed
my @never = map { sprintf 'w%016x', 0xdead0000 + $_ } 1 .. 40;
# first seen empty long ago (the trim pass notes the time it first sees
# one, and retires it a day later)
$env->redis('HSET', 'cfcost:retiring', map { ("cfcost:rec:{$_}", 1000) } @never);
$env->redis('SADD', 'cfcost:writers', @never);

my $rec = $env->records->[0];
my $old = 'wfeedfacefeedface';
my @pairs = map { $_ => ($_ eq 'request_id' ? 'f' x 32
                         : $_ eq 'ts_ms' ? '1000' : $rec->{$_}) }
            grep { !/^_/ } sort keys %$rec;
$env->redis('SADD', 'cfcost:writers', $old);
my $id = $env->redis('XADD', "cfcost:rec:{$old}", '1000-0', @pairs);
is($id, '1000-0', 'a record of 1970 on a writer long gone');
ok(wait_for(sub { total() == $sent + 1 }), 'the aggregator counts it');

ok(wait_for(sub {
        my $m = $env->redis('SMEMBERS', 'cfcost:writers');
        my %dead = map { $_ => 1 } @never, $old;
        ref $m eq 'ARRAY' && !grep { $dead{$_} } @$m
    }, 20), 'the trim pass retires all 41 dead writers')
    or diag(explain($env->redis('SMEMBERS', 'cfcost:writers')));
is_deeply([sort @{ $env->redis('SMEMBERS', 'cfcost:writers') }], [sort @live],
          'only the live writers are listed');
is($env->redis('EXISTS', "cfcost:rec:{$old}", map { "cfcost:rec:{$_}" } @never),
   0, 'their streams are gone (the group script made the never-written '
   . 'ones; none is made again)');
is($env->redis('EXISTS', "cfcost:applied-holes:cfcost:rec:{$old}"), 0,
   'and their holes');
is($env->redis('HGET', 'cfcost:applied-pos', "cfcost:rec:{$old}"), '1000-0',
   'the applied position stays');
is($env->redis('HLEN', 'cfcost:retiring'), 0, 'cfcost:retiring is empty again');

# the old record sent again (a lost reply, an old spool file): registered
# and stored again, as a replay does, it counts as stale, not twice
is($env->redis('MULTI'), 'OK', 'a replay of the 1970 record: MULTI');
$env->redis('SADD', 'cfcost:writers', $old);
$env->redis('XADD', "cfcost:rec:{$old}", '1000-0', @pairs);
my $ex = $env->redis('EXEC');
is(ref $ex eq 'ARRAY' && $ex->[1], '1000-0', '... stored again in a new stream');
sleep 3;
is(total(), $sent + 1, 'and not counted twice');
$env->redis('SREM', 'cfcost:writers', $old);
$env->redis('DEL', "cfcost:rec:{$old}");
is(total(), $sent + 1, 'the totals keep what they counted');
my $log = CfcostTest::_slurp($env->tmp . '/aggregator.log');
my $n = () = $log =~ /retired \(its writer is gone\)/g;
cmp_ok($n, '>=', 1, "the aggregator logs each retirement it sees ($n)");

# ------------------------- a live writer whose stream was retired meanwhile

# what the trim script does to an idle stream, done by hand to the live
# ones (a live writer idle longer than the retention)
for my $w (@live) {
    $env->redis('DEL', "cfcost:rec:{$w}", "cfcost:applied-holes:cfcost:rec:{$w}");
    $env->redis('HDEL', 'cfcost:applied-pos', "cfcost:rec:{$w}");
    $env->redis('SREM', 'cfcost:writers', $w);
}
is($env->redis('SCARD', 'cfcost:writers'), 0, 'the live writers retired too');

for (1 .. 20) { chat_ok() }
is($sent, 26, '20 more requests served');
ok(wait_for(sub { total() == $sent + 1 }, 20),
   'every one of them counted once: the writers registered again with '
   . 'their records') or diag('total ' . total() . ", want " . ($sent + 1));
my %ids;
$ids{ $_->{request_id} }++ for @{ $env->records };
is(scalar(grep { $_ > 1 } values %ids), 0, 'no record stored twice');
is(scalar(keys %ids), 20, 'the 20 records are in the new streams');
like($env->error_log, qr/retired this worker's idle record stream; it is registered again/,
     'the worker says so (notice)');
cmp_ok($env->redis('SCARD', 'cfcost:writers'), '>=', 1,
       'its writer is listed again');

# no [error] expected: a retirement is routine
$env->done;
done_testing();
