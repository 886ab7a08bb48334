# cfcost_key_concurrency: requests in flight per API key, for all workers.
#
#   - N requests of a key to a slow upstream are served; the N+1th, on any
#     route, gets 429 in that route's shape with Retry-After, before its
#     body is read or anything goes upstream, and is recorded at no cost;
#   - other keys are not affected;
#   - the count goes back to zero however requests end: answered, refused,
#     the client gone (waiting for the upstream, sending its body, in a
#     stream), the upstream failing (closed, an error status, a stream cut);
#   - a reload keeps the counts of requests still in flight (the zone is
#     reused), and a new cap applies to new requests;
#   - a zone too small for the keys in flight refuses (503), logs it, and
#     recovers.
#
# "The count is back to zero" is checked by probe(): N slow requests are
# served and one more is refused -- exactly N, not fewer.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time sleep);
use Digest::SHA qw(sha256_hex);
use JSON::PP;
use CfcostTest;

my $MODEL = '@cf/meta/llama-3.1-8b-instruct';
my $CAP   = 3;
my $SLOW  = '[emu:delay 1500]';
my $JSON  = JSON::PP->new->utf8->canonical;

my $env;


# the shipped configuration with another cap (and zone size)
sub conf_with {
    my ($e, $cap, $zone) = @_;
    my $c = $e->conf_text;
    $c =~ s/cfcost_key_concurrency \d+;/cfcost_key_concurrency $cap;/
        or die "no cfcost_key_concurrency in the shipped configuration";
    $c =~ s/(cfcost_key_concurrency \d+;)/$1\n    cfcost_key_concurrency_zone $zone;/
        if $zone;
    return $c;
}


sub start_env {
    my ($cap, %o) = @_;
    my $e = CfcostTest->start(workers => $o{workers} // 2, nginx => 0);
    $e->_write($e->tmp . '/nginx.conf', conf_with($e, $cap, $o{zone}));
    $e->start_nginx;
    return $e;
}


# --------------------------------------------------------------------------
# raw HTTP, so that many requests can be in flight from this one process

sub request_text {
    my ($route, $key, $content, %o) = @_;
    my $msg = [{ role => 'user', content => $content }];
    my ($path, $body, $auth);
    if ($route eq 'chat') {
        ($path, $auth) = ('/api/ai/chat', "X-API-Key: $key");
        $body = { model => $MODEL, messages => $msg };
    } elsif ($route eq 'openai') {
        ($path, $auth) = ('/v1/chat/completions', "Authorization: Bearer $key");
        $body = { model => $MODEL, messages => $msg };
    } else {
        ($path, $auth) = ("/client/v4/accounts/test-account/ai/run/$MODEL",
                          "Authorization: Bearer $key");
        $body = { messages => $msg };
    }
    $body->{stream} = JSON::PP::true if $o{stream};
    my $b = $JSON->encode($body);
    my $len = $o{length} // length $b;
    return "POST $path HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        . "$auth\r\nContent-Type: application/json\r\n"
        . "Content-Length: $len\r\n\r\n$b";
}


# sends a request (with only the first $o{body_part} bytes of its body)
# and returns the socket
sub send_req {
    my ($route, $key, $content, %o) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $env->port, Proto => 'tcp', Timeout => 10)
        or die "connect: $!";
    binmode $s;
    my $req = request_text($route, $key, $content, %o);
    $req = substr($req, 0, index($req, "\r\n\r\n") + 4 + $o{body_part})
        if defined $o{body_part};
    my $off = 0;
    while ($off < length $req) {
        my $w = syswrite($s, $req, length($req) - $off, $off);
        die "write: $!" unless defined $w;
        $off += $w;
    }
    return $s;
}


# reads the whole answer: {status, headers, body, json}
sub read_resp {
    my ($s, $timeout) = @_;
    my $raw = '';
    my $sel = IO::Select->new($s);
    my $until = time + ($timeout // 30);
    while (time < $until && $sel->can_read($until - time)) {
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $raw .= $buf;
    }
    close $s;
    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    $head //= '';
    $body //= '';
    my %h = map { /^([^:]+):\s*(.*?)\s*$/ ? (lc $1 => $2) : () }
            split /\r\n/, $head;
    if (($h{'transfer-encoding'} // '') =~ /chunked/i) {
        my ($rest, $out) = ($body, '');
        while ($rest =~ s/^([0-9a-fA-F]+)\r\n//) {
            my $len = hex $1;
            last if $len == 0;
            $out .= substr($rest, 0, $len, '');
            $rest =~ s/^\r\n//;
        }
        $body = $out;
    }
    my ($st) = $head =~ m{^HTTP/1\.1 (\d+)};
    my $json = $body =~ /^\s*\{/ ? eval { $JSON->decode($body) } : undef;
    return { status => $st // 0, headers => \%h, body => $body,
             json => $json };
}


sub call { read_resp(send_req(@_)) }


# waits until the emulator has received $n requests since its last clear
sub wait_upstream {
    my ($n, $timeout) = @_;
    my $until = time + ($timeout // 10);
    my $got = 0;
    while (time < $until) {
        $got = scalar @{ $env->emu_requests };
        return $got if $got >= $n;
        sleep 0.05;
    }
    return $got;
}


# waits until Redis holds $n records
sub wait_count {
    my ($n, $timeout) = @_;
    my $until = time + ($timeout // 10);
    my $c = 0;
    while (time < $until) {
        $c = $env->record_count;
        return $c if $c >= $n;
        sleep 0.05;
    }
    return $c;
}


# --------------------------------------------------------------------------

# $cap slow requests of $key are served and one more is refused: the
# count was zero before
sub probe {
    my ($name, $key, $cap) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    $cap //= $CAP;
    $env->emu_clear;
    my $before = $env->record_count;
    my @s = map { send_req('chat', $key, "probe $_ $SLOW") } 1 .. $cap;
    my $up = wait_upstream($cap);
    is($up, $cap, "$name: $cap requests in flight upstream");
    my $r = call('chat', $key, 'probe one more');
    is($r->{status}, 429, "$name: one more is refused")
        or diag($r->{body});
    my @st = map { read_resp($_)->{status} } @s;
    is_deeply(\@st, [(200) x $cap], "$name: the $cap are served");
    # their records are written after the answers: all in before the
    # next step counts its own
    is(wait_count($before + $cap + 1), $before + $cap + 1,
       "$name: $cap + 1 records");
}


$env = start_env($CAP);
my $alice = $env->create_key(user => 'alice');
my $bob   = $env->create_key(user => 'bob');

# 1. the cap, in each route's shape; requests of every route count
my %shape = (
    chat => sub {
        my ($r, $name) = @_;
        like($r->{json}{detail} // '', qr/3 requests in flight/,
             "$name: {\"detail\"} says why");
    },
    openai => sub {
        my ($r, $name) = @_;
        my $e = $r->{json}{error} // {};
        ok(ref $e eq 'HASH' && ($e->{type} // '') eq 'rate_limit_error'
           && ($e->{message} // '') =~ /3 requests in flight/
           && exists $e->{param} && !defined $e->{param}
           && exists $e->{code} && !defined $e->{code},
           "$name: OpenAI's error object, rate_limit_error")
            or diag($r->{body});
    },
    native => sub {
        my ($r, $name) = @_;
        my $j = $r->{json} // {};
        ok(exists $j->{result} && !defined $j->{result}
           && JSON::PP::is_bool($j->{success}) && !$j->{success}
           && ref $j->{errors} eq 'ARRAY'
           && ($j->{errors}[0]{code} // 0) == 3036
           && ($j->{errors}[0]{message} // '') =~ /3 requests in flight/
           && ref $j->{messages} eq 'ARRAY',
           "$name: Cloudflare's envelope, code 3036")
            or diag($r->{body});
    },
);

for my $route (qw(chat openai native)) {
    my $name = "over the cap on $route";
    $env->emu_clear;
    my $before = $env->record_count;

    # one slow request on each route: all three count for alice
    my @s = map { send_req($_, $alice->{key}, "slow $route $SLOW") }
            qw(chat openai native);
    is(wait_upstream(3), 3, "$name: 3 requests in flight upstream");

    my $r = call($route, $alice->{key}, 'one too many');
    is($r->{status}, 429, "$name: 429") or diag($r->{body});
    is($r->{headers}{'retry-after'}, '1', "$name: Retry-After: 1");
    like($r->{headers}{'content-type'} // '', qr{^application/json},
         "$name: JSON");
    like($r->{headers}{'x-cfcost-request-id'} // '', qr/^[0-9a-f]{32}$/,
         "$name: a request id");
    ok(defined $r->{json}{detail}, "$name: with \"detail\"");
    $shape{$route}->($r, $name);
    is(scalar @{ $env->emu_requests }, 3,
       "$name: nothing went upstream for it");

    # another key is not affected
    my $b = call('chat', $bob->{key}, 'another key [emu:usage 2 3]');
    is($b->{status}, 200, "$name: another key is served meanwhile");

    my @st = map { read_resp($_)->{status} } @s;
    is_deeply(\@st, [200, 200, 200], "$name: the 3 in flight are served");

    my $rec = $env->wait_record($r->{headers}{'x-cfcost-request-id'} // '');
    CfcostTest::check_fields($rec, {
        status => '429', error => 'concurrency_limit', cost_pusd => '0',
        input_tokens => '0', output_tokens => '0', key_id => $alice->{id},
        user => 'alice', route => $route, model => '',
        upstream_status => '0',
    }, "$name: record");
    is(wait_count($before + 5), $before + 5,
       "$name: 5 records (3 served, the refused one, the other key's)");
}

probe('after answers and refusals', $alice->{key});

# 2. clients that leave
{
    my $name = 'clients gone while the upstream is slow';
    my $before = $env->record_count;
    $env->emu_clear;
    my @s = map { send_req('chat', $alice->{key}, "leaving $_ $SLOW") }
            1 .. $CAP;
    wait_upstream($CAP);
    close $_ for @s;
    is(wait_count($before + $CAP), $before + $CAP,
       "$name: their records are made");
    probe("$name", $alice->{key});
}

{
    my $name = 'a client gone while sending its body';
    my $before = $env->record_count;
    my @s = map {
        send_req('chat', $alice->{key}, "half a body $_", length => 100000,
                 body_part => 20)
    } 1 .. $CAP;
    sleep 0.3;
    close $_ for @s;
    is(wait_count($before + $CAP), $before + $CAP,
       "$name: their records are made");
    probe("$name", $alice->{key});
}

{
    my $name = 'a client gone in the middle of a stream';
    my $before = $env->record_count;
    my @s = map {
        send_req($_, $alice->{key},
                 'a long stream [emu:words 300] [emu:trickle 20]',
                 stream => 1)
    } qw(chat openai native);
    for my $s (@s) {
        my $sel = IO::Select->new($s);
        sysread($s, my $buf, 1024) if $sel->can_read(5);
        close $s;
    }
    is(wait_count($before + 3, 20), $before + 3,
       "$name: their records are made");
    probe("$name", $alice->{key});
}

# 3. an upstream that fails
{
    my $name = 'upstream failures';
    $env->allow_error(qr/upstream prematurely closed connection/);
    my $before = $env->record_count;
    my @s = (
        send_req('chat', $alice->{key}, 'closes [emu:close]'),
        send_req('openai', $alice->{key}, 'fails [emu:status 500]'),
        send_req('native', $alice->{key}, 'cut [emu:die-after 2]',
                 stream => 1),
    );
    my @st = map { read_resp($_)->{status} } @s;
    is_deeply(\@st, [502, 500, 200], "$name: 502, 500, a stream cut short");
    is(wait_count($before + 3), $before + 3, "$name: their records are made");
    probe("$name", $alice->{key});
}

# 4. reload: the zone is reused, the counts of requests still in flight
# in the old workers stay, and they uncount them when they finish
{
    my $name = 'reload with requests in flight';
    $env->emu_clear;
    my @s = map { send_req('chat', $alice->{key}, "old $_ [emu:delay 3000]") }
            1 .. $CAP;
    wait_upstream($CAP);
    my @new = eval { $env->reload_nginx(old_timeout => 0) };
    ok(@new, "$name: new workers") or diag($@);

    my $r = call('native', $alice->{key}, 'new worker, old counts');
    is($r->{status}, 429,
       "$name: the new workers see the old workers' requests");

    my @st = map { read_resp($_)->{status} } @s;
    is_deeply(\@st, [(200) x $CAP], "$name: the old workers serve theirs");
    sleep 0.3;
    probe("$name: then", $alice->{key});
}

{
    my $name = 'reload with a new cap';
    $env->_write($env->tmp . '/nginx.conf', conf_with($env, 2));
    my @new = eval { $env->reload_nginx };
    ok(@new, "$name: new workers") or diag($@);
    probe("$name (2)", $alice->{key}, 2);
    probe("$name: another key", $bob->{key}, 2);
}

$env->done;


# 5. a zone too small for the keys in flight: refused (503), logged, no
# crash; once they are through, it serves again
$env = start_env($CAP, zone => '32k', workers => 1);
$env->allow_error(qr/the "cfcost_key_concurrency" zone is full/);
{
    my $name = 'zone full';
    my $n = 300;
    my @keys;
    for my $i (1 .. $n) {
        my $key = sprintf 'cfk_zonetest%020d', $i;
        $env->redis('HSET', 'cfcost:key:' . sha256_hex($key), 'id',
                    "key_zone$i", 'user', "zone$i", 'revoked', '0');
        push @keys, $key;
    }
    my @s = map { send_req('chat', $keys[$_ - 1], "key $_ [emu:delay 2500]") }
            1 .. $n;
    my (%st, $shape_ok, $r503);
    for my $s (@s) {
        my $r = read_resp($s, 60);
        $st{ $r->{status} }++;
        $r503 //= $r if $r->{status} == 503;
    }
    ok($st{200} && $st{503} && $st{200} + $st{503} == $n,
       "$name: some served, the rest 503")
        or diag(explain(\%st));
    note("zone full: $st{200} served, $st{503} refused");
    like($r503->{json}{detail} // '', qr/cannot count more API keys/,
         "$name: the 503 says why, in the route's shape");
    is($r503 && $r503->{headers}{'retry-after'}, '1', "$name: Retry-After");
    like($env->error_log, qr/\[error\].*the "cfcost_key_concurrency" zone is full/,
         "$name: logged");
    probe("$name: then", $keys[0]);
    probe("$name: then, the last key", $keys[-1]);
}

$env->done;
done_testing;
