#!/usr/bin/perl
#
# staleness: how long after a request's answer /api/usage counts it.
#
#   staleness.pl PORT KEY BODY N SECONDS
#
# Sends chat requests with KEY (a key of its own user, so that no other
# traffic moves its totals) one at a time, at most N or for SECONDS; after
# each answer, polls GET /api/usage with the same key every 0.5 ms until
# its total_requests counts the request, and times that from the end of
# the answer.  Prints one JSON object: {"n", "p50_ms", "p90_ms", "p99_ms",
# "max_ms", "lost"} ("lost": requests never counted within 30 s each).
# Each request on a connection of its own (Connection: close): the probe
# is about milliseconds, a connect on loopback is microseconds.

use strict;
use warnings;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);

my ($port, $key, $body, $n, $seconds) = @ARGV;
die "usage: staleness.pl PORT KEY BODY N SECONDS\n" unless defined $seconds;

sub http {
    my ($method, $path, $content) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 10)
        or return (0, '');
    my $req = "$method $path HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            . "X-API-Key: $key\r\nConnection: close\r\n";
    $req .= "Content-Type: application/json\r\nContent-Length: "
          . length($content) . "\r\n" if defined $content;
    $req .= "\r\n" . ($content // '');
    print {$s} $req;
    local $/;
    my $res = <$s> // '';
    close $s;
    my ($status) = $res =~ m{^HTTP/1\.[01] (\d{3})};
    return ($status // 0, $res);
}

sub counted {
    my ($status, $res) = http('GET', '/api/usage');
    return -1 unless $status == 200;
    my ($t) = $res =~ /"total_requests":(\d+)/;
    return $t // -1;
}

my $seen = counted();
die "staleness.pl: GET /api/usage failed\n" if $seen < 0;

my (@ms, $lost);
my $until = time + $seconds;
$lost = 0;
while (@ms + $lost < $n && time < $until) {
    my ($status) = http('POST', '/api/ai/chat', $body);
    die "staleness.pl: the chat request answered $status\n" if $status != 200;
    my $t0 = time;
    $seen++;
    my $got;
    while (time - $t0 < 30) {
        my $c = counted();
        if ($c >= $seen) { $got = 1; $seen = $c; last }
        sleep 0.0005;
    }
    if ($got) { push @ms, (time - $t0) * 1000 } else { $lost++ }
    sleep 0.005;
}

@ms = sort { $a <=> $b } @ms;
my $pct = sub {
    my ($p) = @_;
    return 'null' unless @ms;
    my $i = int($p / 100 * @ms + 0.999999) - 1;
    $i = 0 if $i < 0;
    return sprintf '%.1f', $ms[$i];
};
printf qq({"n":%d,"p50_ms":%s,"p90_ms":%s,"p99_ms":%s,"max_ms":%s,"lost":%d}\n),
    scalar @ms, $pct->(50), $pct->(90), $pct->(99),
    (@ms ? sprintf('%.1f', $ms[-1]) : 'null'), $lost;
