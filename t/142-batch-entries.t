#!/usr/bin/perl
# Batch entries (common/cfcost_schema.h): several records of a writer in
# one stream entry.  Each record counts once, by the summed script and by
# the exact one (a dedup ttl); the entry is acknowledged once; every
# record is a row of its own in the log, with its own id and cursor; a
# batch whose framing breaks counts the records before the break; an
# entry that cannot be applied is set aside whole, and the stream goes on.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use CfcostTest;

my $env = CfcostTest->start(nginx => 0);
my ($W1, $W2, $W3) = ('w00000000000c0001', 'w00000000000c0002',
                      'w00000000000c0003');
my (%last, %want, $nrid);

sub stream { "cfcost:rec:{$_[0]}" }
sub ns { length($_[0]) . ":$_[0]," }

# a record as schema 2 packs it (cfcost_packed_e's order)
sub packed {
    my (%r) = @_;
    return join '', map { ns($_) } 2, $r{rid}, $r{ts}, "k_$r{user}",
        $r{user}, $r{model} // 'm1', '', 'chat', 200, 200, $r{in} // 1,
        $r{out} // 1, 0, $r{cost}, 1, 1, '', 'v1', 1, '', '', '';
}

sub next_id {
    my ($w) = @_;
    my $ms = int(time * 1000);
    my $l = $last{$w} //= [0, 0];
    if ($ms > $l->[0]) { @$l = ($ms, 0) } else { $l->[1]++ }
    return "$l->[0]-$l->[1]";
}

# one entry of records (a batch with "b", one record alone with "r");
# returns the entry id.  Each record: [user, cost, request id (or new)]
sub entry {
    my ($w, $field, @recs) = @_;
    my $id = next_id($w);
    my $ts = int(time * 1000);
    my @p = map { packed(user => $_->[0], cost => $_->[1], ts => $ts,
                         rid => $_->[2] // sprintf('%032x', ++$nrid)) }
        @recs;
    my $v = $field eq 'r' ? $p[0] : join '', map { ns($_) } @p;
    my $r = $env->redis('XADD', stream($w), $id, $field, $v);
    die "XADD: $r->{error}" if ref $r;
    $env->redis('SADD', 'cfcost:writers', $w);
    return $id;
}

sub get { $env->agg_get(@_) }

sub who { $_[0] eq '*' ? ('X-Cfcost-Admin' => 1)
                       : ('X-Cfcost-User' => $_[0]) }

sub usage {
    my ($who) = @_;
    my ($st, $j, $raw) = get('/api/usage', who($who));
    return (-1, '') unless $st && $st == 200 && $j;
    my ($cost) = $raw =~ /"total_cost_usd":([0-9.]+)/;
    return ($j->{total_requests}, $cost);
}

sub wait_for {
    my ($t, $f) = @_;
    my $until = time + $t;
    while (time < $until) { return 1 if $f->(); sleep 0.1 }
    return $f->();
}

sub pending {
    my ($w) = @_;
    my $r = $env->redis('XPENDING', stream($w), 'cfcost-aggregator');
    return ref $r eq 'ARRAY' ? $r->[0] : -1;
}

sub metric {
    my ($name) = @_;
    my (undef, undef, $m) = get('/metrics', who('*'));
    my ($v) = ($m // '') =~ /^\Q$name\E (\d+)$/m;
    return $v;
}

sub agg_log { CfcostTest::_slurp($env->tmp . '/aggregator.log') }

# ---- the summed script ---------------------------------------------------

$env->start_aggregator('--retention-days', 0);

my @ids;
my $M = 1_000_000;                      # picodollars: 0.000001 USD
push @ids, entry($W1, 'b', ['alice', $M], ['bob', 2 * $M],
                 ['alice', 3 * $M]);
push @ids, entry($W1, 'r', ['carol', 4 * $M]);
push @ids, entry($W1, 'b', ['alice', 5 * $M], ['carol', 6 * $M]);

ok(wait_for(20, sub { (usage('*'))[0] == 6 }),
   'summed: 3 entries, 6 records, each counted');
is_deeply([ usage('*') ], [6, '0.000021'], '... every request; the cost');
is_deeply([ usage('alice') ], [3, '0.000009'], "... alice's 3 records");
is((usage('carol'))[0], 2, "... carol's 2");
is((usage('bob'))[0], 1, "... bob's 1");
is($env->redis('XLEN', stream($W1)), 3, '... 3 entries in the stream');
ok(wait_for(5, sub { pending($W1) == 0 }), '... each acknowledged');

# the log: a row per record, with its own id; pages through the cursors
my (@rows, $cursor, $pages);
while (1) {
    my ($st, $j) = get('/api/usage/logs?limit=2'
        . (defined $cursor ? "&cursor=$cursor" : ''), who('*'));
    last unless $st && $st == 200 && $j;
    push @rows, @{ $j->{logs} };
    $cursor = $j->{next_cursor};
    last if !defined $cursor || ++$pages > 10;
}
my %seen;
$seen{ $_->{id} }++ for @rows;
is(scalar(@rows), 6, 'log: 6 rows, 2 a page');
is_deeply([ sort keys %seen ],
          [ sort map { "$W1:$_" } $ids[0], "$ids[0].1", "$ids[0].2",
                $ids[1], $ids[2], "$ids[2].1" ],
          "log: record k of a batch entry is <writer>:<entry id>.<k>, "
          . 'each once');
my %users;
$users{ $_->{id} } = $_->{request_id} for @rows;
is(scalar(keys %{ { map { $_ => 1 } values %users } }), 6,
   'log: each row its own record');
{
    my ($st, $j) = get('/api/usage/logs', who('alice'));
    is(scalar(@{ $j->{logs} || [] }), 3, "log: alice sees her 3 rows");
}

# ---- a batch whose framing breaks ----------------------------------------

{
    my $ts = int(time * 1000);
    my $p = packed(user => 'dave', cost => 7, ts => $ts,
                   rid => sprintf('%032x', ++$nrid));
    my $id = next_id($W1);
    $env->redis('XADD', stream($W1), $id, 'b', ns($p) . '999:cut');
    ok(wait_for(20, sub { (usage('dave'))[0] == 1 }),
       'broken framing: the record before the break counted');
    ok(wait_for(5, sub { agg_log() =~ /entry \Q$id\E is a batch whose framing breaks after 1 records/ }),
       '... and the break logged');
    ok(wait_for(5, sub { pending($W1) == 0 }), '... acknowledged');
}

# ---- an entry that cannot be applied: set aside whole ---------------------

$env->redis('SET', 'cfcost:r:u:mallory', 'not a hash');
my $bad = entry($W1, 'b', ['mallory', 1], ['erin', 2]);
my $after = entry($W1, 'b', ['erin', 3], ['erin', 4]);
ok(wait_for(30, sub { (usage('erin'))[0] == 2 }),
   'poison: the entry after is counted');
ok(wait_for(5, sub { agg_log() =~ /entry \Q$bad\E of \S+ cannot be applied .*without counting its 2 records/ }),
   "poison: the entry that writes to a key of the wrong type set aside "
   . 'whole, logged with its records');
is((usage('*'))[0], 6 + 1 + 2, '... nothing else counted');
ok(wait_for(5, sub { pending($W1) == 0 }), '... nothing left pending');
$env->redis('DEL', 'cfcost:r:u:mallory');
is(metric('cfcost_aggregator_records_invalid_total'), 2,
   '... its 2 records counted as invalid');

# ---- a group delivering everything again: each record stale --------------

$env->stop_aggregator;
$env->redis('XGROUP', 'DESTROY', stream($W1), 'cfcost-aggregator');
$env->redis('XGROUP', 'CREATE', stream($W1), 'cfcost-aggregator', '0');
$env->start_aggregator('--retention-days', 0);
ok(wait_for(20, sub { pending($W1) == 0
                      && ($env->redis('XINFO', 'GROUPS', stream($W1))->[0][7]
                          // '') eq $after }),
   'stale: a group at 0 delivers every entry again, each acknowledged');
is((usage('*'))[0], 9, '... none counted again');
is(metric('cfcost_aggregator_records_stale_total'), 6 + 1 + 2 + 2,
   '... every record of them stale, a batch entry\'s records each');
is(metric('cfcost_aggregator_records_applied_total'), 0, '... none applied');

$env->stop_aggregator;

# ---- the exact script: a dedup ttl ----------------------------------------

$env->start_aggregator('--retention-days', 0, '--dedup-ttl', 600);
my $rid = sprintf('%032x', ++$nrid);
my $first = entry($W2, 'b', ['frank', 10, $rid], ['frank', 20],
                  ['frank', 10, $rid]);
entry($W2, 'r', ['frank', 5]);
entry($W2, 'b', ['frank', 1, $rid]);
ok(wait_for(20, sub { (usage('frank'))[0] == 3 }),
   'exact: a request id twice in a batch and once more after: counted once');
is($env->redis('GET', "cfcost:applied:$rid"), $first,
   '... marked with the entry that applied it');
ok(wait_for(5, sub { pending($W2) == 0 }), '... all acknowledged');
sleep 0.5;
is((usage('frank'))[0], 3, '... and no more');

# a new writer's batch entries by the exact script, one after the other
entry($W3, 'b', map { ["gina$_", 1] } 1 .. 40);
entry($W3, 'b', map { ["gina$_", 1] } 1 .. 40);
ok(wait_for(20, sub { (usage('*'))[0] == 9 + 3 + 80 }),
   'exact: 2 batch entries of 40 records each');
is((usage('gina7'))[0], 2, '... each record for its user');

$env->done;
done_testing();
