#!/usr/bin/perl
# The log index in time buckets (docs/log-index.md): pages in time order
# whatever order records arrive in (latency spreads, a spool replayed a
# day late, many records in one bucket, a few in many), no row repeated
# or skipped across pages while records keep arriving, and an index left
# by an earlier version (sorted sets) moved into buckets, each member
# once, while the aggregator runs.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use CfcostTest;

my $env = CfcostTest->start(nginx => 0);
my @W = ('w00000000000b0001', 'w00000000000b0002');
my (%seq, %ts_of, @all);

srand(141);

sub stream { "cfcost:rec:{$_[0]}" }

# one record, as a gateway writes it; returns its member
sub add {
    my ($w, $ts, $user, %o) = @_;
    my $ms = int(time * 1000);
    my $last = $seq{$w} //= [0, 0];
    if ($ms > $last->[0]) { @$last = ($ms, 0) } else { $last->[1]++ }
    my $id = "$last->[0]-$last->[1]";
    my $r = $env->redis('XADD', stream($w), $id, v => 1,
        request_id => sprintf('%032x', scalar(@all) + 1), ts_ms => $ts,
        key_id => "k_$user", user => $user, model => $o{model} // 'm1',
        route => 'chat', status => 200, upstream_status => 200,
        input_tokens => 1, output_tokens => 1, cached_tokens => 0,
        cost_pusd => 5, latency_us => 1, flags => '', error => '');
    die "XADD: $r->{error}" if ref $r;
    $env->redis('SADD', 'cfcost:writers', $w);
    my $m = sprintf('%015d:%s:%s', $ts, $w, $id);
    push @all, { m => $m, id => "$w:$id", user => $user,
                 model => $o{model} // 'm1' };
    return $m;
}

sub get { $env->agg_get(@_) }

sub who { $_[0] eq '*' ? ('X-Cfcost-Admin' => 1)
                       : ('X-Cfcost-User' => $_[0]) }

# every row through the cursors; dies on a bad page
sub pages {
    my ($who, $query, $between) = @_;
    my (@rows, $cursor, $n);
    while (1) {
        my ($st, $j) = get('/api/usage/logs?' . $query
            . (defined $cursor ? "&cursor=$cursor" : ''), who($who));
        die "logs: $st\n" unless $st && $st == 200 && $j;
        push @rows, @{ $j->{logs} };
        $cursor = $j->{next_cursor};
        last unless defined $cursor;
        die "too many pages\n" if ++$n > 5000;
        $between->() if $between;
    }
    return @rows;
}

sub total {
    my ($st, $j) = get('/api/usage', who('*'));
    return $st && $st == 200 ? $j->{total_requests} : -1;
}

sub wait_for {
    my ($t, $f) = @_;
    my $until = time + $t;
    while (time < $until) { return 1 if $f->(); sleep 0.1 }
    return $f->();
}

# the rows a scope should list, newest first (the member order)
sub want {
    my ($user, $model) = @_;
    return map { $_->{id} }
        sort { $b->{m} cmp $a->{m} }
        grep { ($user eq '*' || $_->{user} eq $user)
               && (!defined $model || $_->{model} eq $model) } @all;
}

# --------------------------------------------------------------------------
# 1. an index an earlier version left: sorted sets, moved on start

my $now = int(time * 1000);
my @old;
for my $i (1 .. 2600) {
    my $u = ('ann', 'ben')[$i % 2];
    push @old, [ add($W[$i % 2], $now - 86_400_000 + $i * 1000, $u), $u ];
}
for my $w (@W) {
    $env->redis('HSET', 'cfcost:applied-pos', stream($w),
        join('-', @{ $seq{$w} }));
}
for my $o (@old) {
    $env->redis('ZADD', 'cfcost:logidx:all', 0, $o->[0]);
    $env->redis('ZADD', "cfcost:logidx:u:$o->[1]", 0, $o->[0]);
    $env->redis('SADD', 'cfcost:r:users', $o->[1]);
}
# one member moved already by a move that was cut short: listed once
my $dup = $old[0][0];
my $dupb = substr($dup, 0, 13);
$env->redis('APPEND', "cfcost:logb:$dupb:all", "$dup\n");
$env->redis('ZADD', 'cfcost:logbs:all', $dupb, $dupb);

$env->start_aggregator('--retention-days', 0);
ok(wait_for(20, sub { !$env->redis('EXISTS', 'cfcost:logidx:all',
    'cfcost:logidx:u:ann', 'cfcost:logidx:u:ben') }),
    'the old index is moved into buckets, then gone');
like(CfcostTest::_slurp($env->tmp . '/aggregator.log'),
    qr/5200 members of the old index moved into buckets/,
    'the move is logged, with its count');
is_deeply([ map { $_->{id} } pages('*', 'limit=1000') ], [ want('*') ],
    "everyone's logs: every moved record once, newest first");
is_deeply([ map { $_->{id} } pages('ann', 'limit=77') ], [ want('ann') ],
    "a user's logs: hers, in pages of 77");

# --------------------------------------------------------------------------
# 2. records out of time order, paged while more arrive

# a latency spread of seconds, then a spool replayed a day late
for my $i (1 .. 400) {
    add($W[$i % 2], int(time * 1000) - int(rand 5000), 'cid');
}
for my $i (1 .. 300) {
    add($W[1], int(time * 1000) - 86_400_000 - int(rand 3_600_000), 'cid');
}
ok(wait_for(20, sub { total() == @all - @old }), 'every new record applied');

my %before = map { $_ => 1 } want('cid');
my $more = 0;
my @rows = pages('cid', 'limit=25', sub {
    # between pages: newer records, and some older than any cursor
    for (1 .. 5) {
        add($W[0], int(time * 1000) - int(rand 2000), 'cid');
        add($W[1], int(time * 1000) - 2 * 86_400_000, 'cid');
        $more += 2;
    }
});
my %seen;
my @dups = grep { $seen{$_->{id}}++ } @rows;
is(scalar @dups, 0, 'paging while records arrive: no row twice');
my @missed = grep { !$seen{$_} } keys %before;
is(scalar @missed, 0, 'no record indexed before the first page is skipped '
    . '(' . scalar(keys %before) . ')');
my @order = map { $_->{timestamp} } @rows;
is_deeply(\@order, [ sort { $b cmp $a } @order ], 'rows newest first');

ok(wait_for(20, sub { total() == @all - @old }), 'the later records applied');
is_deeply([ map { $_->{id} } pages('cid', 'limit=1000') ], [ want('cid') ],
    'read again: every record once, in time order');

# --------------------------------------------------------------------------
# 3. one bucket of many records; many buckets of one; a filter that
#    matches few

my $t = int(time * 1000) - 10_000;
add($W[$_ % 2], $t, 'dee') for 1 .. 1200;
for my $i (1 .. 1500) {
    add($W[0], $t - 3_600_000 - $i * 700, 'dee',
        model => $i % 500 ? 'm1' : 'rare');
}
ok(wait_for(20, sub { total() == @all - @old }), 'dense and sparse applied');
is_deeply([ map { $_->{id} } pages('dee', 'limit=50') ], [ want('dee') ],
    '1,200 records in one bucket and 1,500 buckets of one: pages of 50');
is_deeply([ map { $_->{id} } pages('dee', 'limit=10&model=rare') ],
    [ want('dee', 'rare') ], 'a filter that matches 3 of 2,700');
my ($st, undef, $csv) = get('/api/usage/logs?format=csv', who('dee'));
my @lines = split /\r\n/, $csv;
is(scalar @lines, 2701, 'CSV: a header and 2,700 rows');
is_deeply([ map { (split /,/)[0] } @lines[1 .. $#lines] ], [ want('dee') ],
    'CSV: in time order');

# --------------------------------------------------------------------------
# 4. the summed and exact scripts both append (t/467 compares them); the
#    bucket of a record is its time's first 13 digits

my $m = $all[-1]{m};
my $bk = substr($m, 0, 13);
like($env->redis('GET', "cfcost:logb:$bk:u:dee"), qr/^\Q$m\E$/m,
    "a record's member is in its user's bucket of its time");
ok(defined $env->redis('ZSCORE', 'cfcost:logbs:u:dee', $bk),
    '... and that bucket in the user\'s set');

$env->done;
done_testing();
