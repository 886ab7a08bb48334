# What a client chooses never grows the rollups, the usage API or the
# metrics (README, "Who can do what"): a request naming a model that is
# not priced is counted under "(unpriced)", its name kept (at most 128
# bytes) only in its own record.  Ten requests or two hundred with random
# names: the same rollup fields, the same /api/usage, the same /metrics.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use CfcostTest;

my $env = CfcostTest->start(aggregator => 1);
my $k = $env->create_key(user => 'chooser');
my $JS = JSON::PP->new->utf8->canonical;

my $sent = 0;

sub burst {
    my ($n) = @_;
    for (1 .. $n) {
        my $name = sprintf('@cf/random/%08x-%d', int(rand(2**32)), $sent);
        my $r = $env->chat(key => $k->{key}, body => {
            model => $name, messages => [{ role => 'user', content => 'x' }] });
        $sent++;
        return 0 unless $r->{status} == 400;
    }
    return 1;
}

sub settled {
    my $until = time + 15;
    while (time < $until) {
        my $u = usage();
        my $n = $u && $u->{by_model}{'(unpriced)'}
              ? $u->{by_model}{'(unpriced)'}{requests} : 0;
        return $u if $n == $sent;
        sleep 0.2;
    }
    return usage();
}

sub usage {
    my $r = $env->http('GET', '/api/usage',
                       headers => { Authorization => 'Bearer ' . $env->admin_token });
    return $r->{status} == 200 ? $JS->decode($r->{body}) : undef;
}

sub shape {
    my ($fields, $metrics, $usage) = @_;
    return { fields => $fields, metrics => $metrics,
             models => [sort keys %{ $usage->{by_model} }] };
}

sub observe {
    my $u = settled();
    # every rollup hash: its name and field count
    my %f;
    for my $key (@{ $env->redis('KEYS', 'cfcost:r:*') }) {
        next unless $env->redis('TYPE', $key) eq 'hash';
        $f{$key} = $env->redis('HLEN', $key);
    }
    my $f = \%f;
    my $m = $env->http('GET', '/metrics', headers => {
        Authorization => 'Bearer ' . $env->metrics_token });
    is($m->{status}, 200, '/metrics answers the metrics token');
    like($m->{body}, qr/^cfcost_/m, '... with cfcost series');
    my $lines = () = ($m->{body} // '') =~ /\n/g;
    return ($u, $f, $lines);
}

ok(burst(10), '10 requests with random unpriced models: each a 400');
my ($u1, $f1, $m1) = observe();
is_deeply([sort keys %{ $u1->{by_model} }], ['(unpriced)'],
          '/api/usage: one model, "(unpriced)"');
is($u1->{by_model}{'(unpriced)'}{requests}, 10, '"(unpriced)": 10 requests');

# CFCOST_CARDINALITY_N: how many in all (200; the issue's figure: 5000)
my $all = $ENV{CFCOST_CARDINALITY_N} || 200;
$all = 20 if $all < 20;
ok(burst($all - 10), ($all - 10) . ' more: each a 400');
my ($u2, $f2, $m2) = observe();
is_deeply([sort keys %{ $u2->{by_model} }], ['(unpriced)'],
          '/api/usage: still one model');
is($u2->{by_model}{'(unpriced)'}{requests}, $all, "\"(unpriced)\": $all requests");
is_deeply($f2, $f1, 'every rollup hash (' . join(', ', map { "$_ $f1->{$_}" }
          sort keys %$f1) . ') keeps its fields: none is a name')
    or diag(explain($f2));
is($m2, $m1, "/metrics keeps $m1 lines");

my @recs = grep { ($_->{model_asked} // '') =~ m{^\@cf/random/} }
    @{ $env->records };
is(scalar @recs, $all, 'every record keeps the name the client gave');
is(scalar(grep { $_->{model} ne '(unpriced)' } @recs), 0,
   'and names "(unpriced)" as its model');

$env->done;
done_testing;
