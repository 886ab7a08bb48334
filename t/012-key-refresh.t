#!/usr/bin/perl
#
# The key cache refreshes a key in use in the background once its entry is
# half its ttl (1 s in the shipped config) old: the request that notices
# is decided from the cache (no Redis round trip on its path), and the
# reply refreshes the entry for every worker.  Shown with a revocation:
# revoked in Redis right after the entry was fetched, the key is still
# served at 0.6 s (from the cache, starting the refresh) and refused at
# 0.8 s -- before the entry's ttl ran out, which only a background refresh
# can do.  Then a key used steadily for 3 s: Redis sees about one lookup
# per half ttl, not one per request.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use CfcostTest;

my $env = CfcostTest->start;
my $content = 'hi [emu:usage 3 4]';

# the scenario, timed from the first (fetching) request's answer; a run
# whose steps came too late to tell anything (a slow machine) is retried
my ($ok, $why);
for my $try (1 .. 4) {
    my $k = $env->create_key(user => "refresh$try");
    my $first = $env->chat(key => $k->{key}, content => $content);
    my $t0 = time;
    is($first->{status}, 200, "try $try: first request 200 (fetched)");
    $env->redis('HSET', "cfcost:key:$k->{hash}", 'revoked', '1') ;
    sleep 0.6 - (time - $t0) if time - $t0 < 0.6;
    my $mid = $env->chat(key => $k->{key}, content => $content);
    my $t_mid = time - $t0;
    sleep 0.8 - (time - $t0) if time - $t0 < 0.8;
    my $late = $env->chat(key => $k->{key}, content => $content);
    my $t_late = time - $t0;
    if ($t_late >= 0.95) {
        $why = sprintf 'try %d: too slow to tell (%.2f s, %.2f s)', $try,
                       $t_mid, $t_late;
        diag($why);
        next;
    }
    $why = sprintf "try %d: at %.2f s %d, at %.2f s %d", $try, $t_mid,
                   $mid->{status}, $t_late, $late->{status};
    $ok = $mid->{status} == 200 && $late->{status} == 401;
    last;
}
ok($ok, 'revoked half a ttl after the fetch: served from the cache, then '
   . 'refused before the ttl ran out') or diag($why);

# steady use: about 2 lookups a second, whatever the request rate
my $k = $env->create_key(user => 'steady');
is($env->chat(key => $k->{key}, content => $content)->{status}, 200,
   'steady: first request');
my $calls = sub {
    my $info = $env->redis('INFO', 'commandstats');
    return $info =~ /cmdstat_hmget:calls=(\d+)/ ? $1 : 0;
};
my $before = $calls->();
my ($n, $bad, $t0) = (0, 0, time);
while (time - $t0 < 3) {
    $bad++ if $env->chat(key => $k->{key}, content => $content)->{status} != 200;
    $n++;
    sleep 0.02;
}
my $lookups = $calls->() - $before;
is($bad, 0, "steady: all $n requests 200");
cmp_ok($n, '>', 30, 'steady: enough requests to tell');
cmp_ok($lookups, '>=', 4, "steady: refreshed in the background ($lookups lookups in 3 s)");
cmp_ok($lookups, '<=', 9, "steady: about one lookup per half ttl ($lookups in 3 s)");

$env->done;
done_testing();
