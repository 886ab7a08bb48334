# The summed apply script (the consumer sums each batch in C) must write
# exactly what the exact script writes for the same records: the same
# rollups, days, users, log index and applied positions, key for key.
# Two Redis get the same records -- several writers, users, keys, models
# and days, costs whose sums carry into whole dollars, records without a
# user, a key or a model, entries trimmed while pending -- and two
# aggregators apply them: one summing (no dedup ttl), one with a dedup
# ttl, which takes the exact script for every batch.  Then every key but
# the streams and the dedup marks is compared.
#
#   CFCOST_SUMMED_N=20000 prove t/467-apply-summed.t    more records

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use CfcostTest;

my $n = $ENV{CFCOST_SUMMED_N} // 3000;
my $sum = CfcostTest->start(nginx => 0);
my $exact = CfcostTest->start(nginx => 0);

srand(467);
my @writers = map { sprintf 'w%016x', 0xa000 + $_ } 1 .. 3;
my @users = ('alice', 'bob', 'carol', '');
my @keys = ('k1', 'k2', 'k3', 'k4', '');
my @models = ('@cf/meta/llama-3.1-8b-instruct', '(unpriced)', '',
              '@cf/qwen/qwq-32b');
my $t0 = 1767225600000;                  # 2026-01-01T00:00:00Z
my (%seq, %ids, %rec, @gone);

sub pick { $_[ int rand @_ ] }

for my $i (1 .. $n) {
    my $w = pick(@writers);
    # ids grow per writer; request times spread over three days
    my $ms = $t0 + $i * 7;
    my $id = "$ms-" . $seq{$w}++;
    my $ts = $t0 + int rand(3 * 86_400_000);
    my @f = (
        v => 1,
        request_id => sprintf('%032x', $i),
        ts_ms => $ts,
        key_id => pick(@keys),
        user => pick(@users),
        model => pick(@models),
        route => 'chat',
        status => pick(200, 200, 200, 429, 502),
        upstream_status => 200,
        input_tokens => int rand 100_000,
        output_tokens => pick(0, int rand 5000),
        cached_tokens => pick(0, 0, int rand 100),
        cost_pusd => pick(0, int rand 1_000_000, int rand 3_000_000_000_000),
        latency_us => 1000,
        flags => '',
        error => '',
    );
    push @{ $ids{$w} }, $id;
    $rec{"$w $id"} = {@f};
    for my $env ($sum, $exact) {
        $env->redis('SADD', 'cfcost:writers', $w);
        my $r = $env->redis('XADD', "cfcost:rec:{$w}", $id, @f);
        die "XADD: $r->{error}" if ref $r;
    }
    push @gone, [$w, $id] if $i % 97 == 0;
}

# some entries are read, then deleted while pending: counted by neither
for my $env ($sum, $exact) {
    for my $w (@writers) {
        $env->redis('XGROUP', 'CREATE', "cfcost:rec:{$w}",
                    'cfcost-aggregator', '0');
        $env->redis('XREADGROUP', 'GROUP', 'cfcost-aggregator', 'early',
                    'COUNT', 100_000, 'STREAMS', "cfcost:rec:{$w}", '>');
    }
    $env->redis('XDEL', "cfcost:rec:{$_->[0]}", $_->[1]) for @gone;
}

# the first writer's first 50 entries are at or below its applied
# position (as after a lost reply): stale for both, counted by neither
my $w0 = $writers[0];
my $pos = $ids{$w0}[49];
$_->redis('HSET', 'cfcost:applied-pos', "cfcost:rec:{$w0}", $pos)
    for $sum, $exact;
my %gone = map { ("$_->[0] $_->[1]" => 1) } @gone;
my %stale = map { ("$w0 $_" => 1) } @{ $ids{$w0} }[0 .. 49];
my @counted = grep { !$gone{$_} && !$stale{$_} } keys %rec;

# no retention: the records are from January, and a trim pass while the
# state is read (thousands of log buckets) would retire the streams
$sum->start_aggregator('--batch', 64, '--claim-idle', 100,
                       '--retention-days', 0);
$exact->start_aggregator('--batch', 64, '--claim-idle', 100,
                         '--retention-days', 0, '--dedup-ttl', 86400);

my $want = @counted;
for my $env ($sum, $exact) {
    my $until = time + 60;
    my $got = 0;
    while (time < $until) {
        $got = $env->redis('HGET', 'cfcost:r:all', 'requests') // 0;
        my $p = 0;
        for my $w (@writers) {
            my $x = $env->redis('XPENDING', "cfcost:rec:{$w}",
                                'cfcost-aggregator');
            $p += ref $x eq 'ARRAY' ? $x->[0] : 1;
        }
        last if $got == $want && $p == 0;
        sleep 0.2;
    }
    is($got, $want, "every record counted once");
}

# the summing aggregator summed its batches (those it reclaimed from the
# early consumer too): only what holds stale entries goes to the exact
# script
my $declined = () = CfcostTest::_slurp($sum->tmp . '/aggregator.log')
    =~ /are not all new/g;
cmp_ok($declined, '<=', 2, "summed: $declined batch(es) declined, the "
    . 'rest summed');

# everything the scripts write, in a form that compares
sub state {
    my ($env) = @_;
    my %s;
    my $keys = $env->redis('KEYS', 'cfcost:*');
    for my $k (sort @$keys) {
        next if $k =~ /^cfcost:(?:rec:|applied:)/;
        my $t = $env->redis('TYPE', $k);
        if ($t eq 'hash') {
            my %h = @{ $env->redis('HGETALL', $k) };
            $s{$k} = \%h;
        } elsif ($t eq 'zset') {
            $s{$k} = $env->redis('ZRANGE', $k, 0, -1, 'WITHSCORES');
        } elsif ($t eq 'set') {
            $s{$k} = [ sort @{ $env->redis('SMEMBERS', $k) } ];
        } elsif ($k =~ /^cfcost:logb:/) {
            # a bucket's members are in the order batches were applied,
            # which differs between runs; readers sort them
            my @m = split /\n/, $env->redis('GET', $k);
            $s{$k} = [ $t, sort @m ];
        } else {
            $s{$k} = [ $t, $env->redis('GET', $k) ];
        }
    }
    return \%s;
}

my ($a, $b) = (state($sum), state($exact));
ok(keys %$a > 40, scalar(keys %$a) . ' keys written');
is_deeply([ sort keys %$a ], [ sort keys %$b ], 'the same keys');
for my $k (sort keys %$b) {
    is_deeply($a->{$k}, $b->{$k}, "$k: the same") or last;
}

# the all-time rollup is the sum of the records (the exact script's
# arithmetic is checked elsewhere; here both against the records)
my ($req, $in, $pusd) = (0, 0, 0);
for my $h (map { $rec{$_} } @counted) {
    $req++;
    $in += $h->{input_tokens};
    $pusd += $h->{cost_pusd};
}
my $all = $a->{'cfcost:r:all'};
is($all->{requests}, $req, 'requests: the records');
is($all->{input_tokens}, $in, 'input tokens: the records\'');
is($all->{cost_usd} * 1e12 + $all->{cost_pusd}, $pusd,
   'cost: the records\', carried into whole dollars');
ok($all->{cost_pusd} < 1e12, 'the picodollars below a dollar');

my $log = CfcostTest::_slurp($sum->tmp . '/aggregator.log');
$declined = () = $log =~ /not all new/g;
ok($declined >= 1, "the summed script declined the batch with the stale "
   . "entries ($declined)");

$sum->done;
$exact->done;
done_testing;
