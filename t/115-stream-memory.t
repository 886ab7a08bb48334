# Memory per streamed request is bounded (README, "Memory per request"):
#
#   - an event larger than 1 MB as sent (CFCOST_SSE_MAX) -- here 20 MB of
#     comment lines before its data, which no limit on data catches -- is
#     passed on as it arrives, unread, instead of being held until its
#     end; the rest of the stream is read and billed as usual;
#   - a client that reads slowly holds the upstream back: the worker does
#     not keep what the client has not taken yet (the copies cfcost makes
#     are recycled, the upstream buffer stays busy until they are sent).
#
# Each checks the worker's peak RSS (VmHWM, reset before the request):
# before the bound, the first grew by the event's size (20 MB and more),
# the second by most of the stream.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use IO::Select;
use Socket qw(SOL_SOCKET SO_RCVBUF);
use Time::HiRes qw(time sleep);
use JSON::PP;
use CfcostTest;

my $MODEL = '@cf/meta/llama-3.1-8b-instruct';
my $BOUND = 10 * 1024;          # kB a stream may add to the worker, at most

my $env = CfcostTest->start(workers => 1);
my $k = $env->create_key(user => 'memory');
my ($worker) = $env->worker_pids;


sub status_kb {
    my ($field) = @_;
    open my $fh, '<', "/proc/$worker/status" or return 0;
    while (<$fh>) {
        return $1 if /^$field:\s+(\d+)\s+kB/;
    }
    return 0;
}


# resets the worker's VmHWM; false when /proc does not let us
sub reset_peak {
    open my $fh, '>', "/proc/$worker/clear_refs" or return 0;
    print $fh "5" or return 0;
    return close $fh;
}


sub request_bytes {
    my ($route, $content) = @_;
    my $msg = [{ role => 'user', content => $content }];
    my ($path, $body, $auth);
    if ($route eq 'chat') {
        ($path, $auth) = ('/api/ai/chat', "X-API-Key: $k->{key}");
        $body = { model => $MODEL, messages => $msg, stream => JSON::PP::true };
    } elsif ($route eq 'openai') {
        ($path, $auth) = ('/v1/chat/completions',
                          "Authorization: Bearer $k->{key}");
        $body = { model => $MODEL, messages => $msg, stream => JSON::PP::true };
    } else {
        ($path, $auth) = ("/client/v4/accounts/test-account/ai/run/$MODEL",
                          "Authorization: Bearer $k->{key}");
        $body = { messages => $msg, stream => JSON::PP::true };
    }
    my $b = JSON::PP->new->utf8->encode($body);
    return "POST $path HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        . "$auth\r\nContent-Type: application/json\r\n"
        . "Content-Length: " . length($b) . "\r\n\r\n$b";
}


# One streamed request; reads the answer at $rate bytes/s (0: at once).
# Returns {status, headers, body (de-chunked, unless $keep is false),
# bytes, tail}.
sub stream {
    my ($route, $content, $rate, $keep) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $env->port, Proto => 'tcp', Timeout => 10)
        or die "connect: $!";
    setsockopt($s, SOL_SOCKET, SO_RCVBUF, 65536) if $rate;
    my $req = request_bytes($route, $content);
    syswrite($s, $req) == length $req or die "write: $!";
    my ($raw, $n, $tail, $t0) = ('', 0, '', time);
    my $sel = IO::Select->new($s);
    while ($sel->can_read(60)) {
        if ($rate) {
            my $ahead = $n / $rate - (time - $t0);
            sleep $ahead if $ahead > 0;
        }
        my $r = sysread($s, my $buf, 65536);
        last unless $r;
        $n += $r;
        if ($keep || length $raw < 4096) {
            $raw .= $buf;
        }
        $tail = substr($tail . $buf, -400);
    }
    close $s;
    my ($head, $rest) = split /\r\n\r\n/, $raw, 2;
    my %h = map { /^([^:]+):\s*(.*)$/ ? (lc $1 => $2) : () }
            split /\r\n/, $head // '';
    my ($st) = ($head // '') =~ m{^HTTP/1\.1 (\d+)};
    my $body = '';
    if ($keep) {
        $rest //= '';
        while ($rest =~ s/^([0-9a-fA-F]+)\r\n//) {
            my $len = hex $1;
            last if $len == 0;
            $body .= substr($rest, 0, $len, '');
            $rest =~ s/^\r\n//;
        }
    }
    return { status => $st // 0, headers => \%h, body => $body,
             bytes => $n, tail => $tail };
}


# one 80-byte comment line as the emulator writes it ([emu:comments])
my $LINE = ': ' . ('c' x 77) . "\n";
my $EVENT = 20_000_000;
my $LINES = int(($EVENT + 79) / 80);

# under AddressSanitizer freed memory waits in its quarantine (256 MB):
# RSS says nothing about the gateway there
my $can_reset = !$ENV{CFCOST_SANITIZE} && reset_peak();
diag("cannot reset VmHWM (/proc/$worker/clear_refs): peaks not checked")
    unless $can_reset || $ENV{CFCOST_SANITIZE};

# a warm-up per route: first-use allocations are not what is measured
stream($_, 'warm up [emu:usage 1 1]', 0, 1) for qw(chat openai native);

for my $route (qw(chat openai native)) {
    my $name = "$route: a 20 MB event (comment lines)";
    sleep 0.2;
    my $before = status_kb('VmRSS');
    reset_peak() if $can_reset;

    my $r = stream($route, "big event [emu:comments $EVENT] "
                   . "[emu:usage 10 20] [emu:split 16384]", 0, 1);
    my $peak = status_kb('VmHWM');

    is($r->{status}, 200, "$name: 200");
    my $pad = $LINE x $LINES;
    ok(substr($r->{body}, 0, length $pad) eq $pad,
       "$name: passed on whole, byte for byte ("
       . length($pad) . " bytes)");
    like(substr($r->{body}, length $pad, 200), qr/^data: \{/,
         "$name: its data line follows");
    like($r->{body}, qr/data: \[DONE\]\n\n\z/, "$name: the stream ends");

    if ($route eq 'openai') {
        unlike($r->{body}, qr/"choices":\[\]/,
               "$name: no usage chunk (the client did not ask)");
    } else {
        like($r->{body}, qr/"cfcost":\{[^}]*"input_tokens":10,"output_tokens":20,/,
             "$name: the cost event, from the usage event");
    }

    my $rec = $env->wait_record($r->{headers}{'x-cfcost-request-id'} // '');
    ok($rec && $rec->{input_tokens} eq '10' && $rec->{output_tokens} eq '20'
       && ($rec->{flags} // '') eq 'streamed',
       "$name: the record bills the usage event, not estimated")
        or diag(explain($rec));

    if ($can_reset) {
        cmp_ok($peak - $before, '<', $BOUND,
               "$name: the worker grew less than $BOUND kB"
               . " (grew " . ($peak - $before) . " kB)");
    }
}

# a slow client: about 30 MB at 8 MB/s on the OpenAI route, whose upstream
# (the emulator) makes it faster than that
{
    my $name = 'openai: a 30 MB stream to a slow client';
    sleep 0.2;
    my $before = status_kb('VmRSS');
    reset_peak() if $can_reset;
    my $t0 = time;
    my $r = stream('openai', 'slow client [emu:words 130000] '
                   . '[emu:split 16384]', 8_000_000, 0);
    my $peak = status_kb('VmHWM');

    is($r->{status}, 200, "$name: 200");
    cmp_ok($r->{bytes}, '>', 25_000_000, "$name: all of it came")
        or diag("$r->{bytes} bytes");
    like($r->{tail}, qr/data: \[DONE\]\n\n\r\n0\r\n\r\n\z/,
         "$name: the stream ends");
    if ($can_reset) {
        cmp_ok($peak - $before, '<', $BOUND,
               "$name: the worker grew less than $BOUND kB (grew "
               . ($peak - $before) . sprintf(" kB in %.1f s)", time - $t0));
    }
}

$env->done;
done_testing;
