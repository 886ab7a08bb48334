#!/usr/bin/perl
# Redis appends a record, then the reply is lost (the gateway gave up on a
# Redis that stopped answering): the record is sent again only if it is
# not in the stream already, so each request is there exactly once.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use CfcostTest;

my $env = CfcostTest->start(workers => 1);
my $k = $env->create_key(user => 'lossy');

is($env->chat(key => $k->{key}, content => 'warm [emu:usage 1 1]')->{status},
   200, 'a first request: the key is cached, the connection up');
$env->wait_records(1, 5);

# Redis stops answering for 2.5 s.  Commands the gateway sends meanwhile
# wait in Redis's socket buffer; the gateway's watchdog (cfcost_redis_timeout
# 1s) drops the connection, and when Redis wakes it still runs them.
my $sleeper = IO::Socket::INET->new(PeerAddr => $env->redis_addr)
    or die "connect: $!";
my ($u, $p) = $env->redis_credentials('admin');
print $sleeper sprintf("*3\r\n\$4\r\nAUTH\r\n\$%d\r\n%s\r\n\$%d\r\n%s\r\n",
                       length $u, $u, length $p, $p);
like(scalar <$sleeper>, qr/^\+OK/, 'AUTH as the admin');
print $sleeper "*3\r\n\$5\r\nDEBUG\r\n\$5\r\nSLEEP\r\n\$3\r\n2.5\r\n";
sleep 0.1;

my %rid;
my $t0 = time;
for my $i (1 .. 5) {
    my $r = $env->chat(key => $k->{key}, content => "during $i [emu:usage 1 1]");
    is($r->{status}, 200, "request $i while Redis sleeps: served");
    $rid{ $r->{headers}{'x-cfcost-request-id'} } = 1;
}
cmp_ok(time - $t0, '<', 2, 'no request waited for Redis');

my $line = <$sleeper>;                  # +OK when Redis wakes
like($line // '', qr/^\+OK/, 'Redis slept and woke');

# the reconnected gateway re-sends what it holds, conditionally
my $recs;
my $until = time + 10;
while (time < $until) {
    $recs = $env->records;
    last if scalar(grep { $rid{ $_->{request_id} } } @$recs) >= 5
            && time - $t0 > 5;          # leave time for a duplicate to show
    sleep 0.1;
}

my %seen;
$seen{ $_->{request_id} }++ for @$recs;
is(scalar(grep { $rid{$_} } keys %seen), 5, 'every request is in the stream');
is(scalar(grep { $_ > 1 } values %seen), 0, 'none of them twice');
is(scalar @$recs, 6, 'six records for six requests');
like($env->error_log, qr/did not answer within 1000 ms/,
     'the watchdog dropped the silent connection');

$env->allow_error(qr/Redis at 127\.0\.0\.1:\d+/);
$env->done;
done_testing;
