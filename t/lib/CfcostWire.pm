package CfcostWire;

# Wire-level helpers shared by the tests that compare the gateway's bytes
# with the emulator's own answer (t/110-stream.t, t/120-openai.t,
# t/130-native.t): raw HTTP/1.1 over a socket (chunked decoding done here,
# so bytes can be timed as they arrive), SSE event splitting, byte
# comparisons, and the expected costs computed in integer picodollars with
# half-up rounding to 6 decimals.  Core Perl only.
#
#   use CfcostWire qw(wire_init gw record_for ...);
#   my $env = CfcostTest->start;
#   my $k   = $env->create_key(user => 'oai');
#   wire_init(env => $env, key => $k, route => 'openai', user => 'oai');
#
# Nothing is exported by default: each test names what it uses.

use strict;
use warnings;

use Exporter 'import';
use Test::More;
use IO::Socket::INET;
use IO::Select;
use JSON::PP;
use Math::BigInt;
use Time::HiRes qw(time sleep);
use CfcostTest;

our @EXPORT_OK = qw(
    $L8 $KIMI $OSS $TL $BGE %PRICE $COST_RE
    wire_init
    pusd usd6 ceil4 utf8_len usage_with_residue cost_self_checks
    connect_to send_request read_response peer_closed request gw emu_direct
    run_path auth_headers
    norm_created show_bytes same_bytes insert_cost
    sse_events event_data is_usage_chunk text_bytes cost_event_text
    done_offset stream_head
    flag_set record_for check_record check_upstream_request
    no_new_records_since check_all_records check_upstream_error
);

our $L8   = '@cf/meta/llama-3.1-8b-instruct';
our $KIMI = '@cf/moonshotai/kimi-k2.5';
our $OSS  = '@cf/openai/gpt-oss-120b';
our $TL   = '@cf/tinyllama/tinyllama-1.1b-chat-v1.0';
our $BGE  = '@cf/baai/bge-small-en-v1.5';

# micro-USD per 1M tokens: input, output, cached input (undef: none)
our %PRICE = (
    $L8   => [282000, 827000, undef],
    $KIMI => [600000, 3000000, 100000],
    $OSS  => [350000, 750000, undef],
    $TL   => [10000, 10000, undef],
    $BGE  => [20000, 0, undef],
);

my $JS = JSON::PP->new->utf8->canonical;

# The test's world, set once by wire_init: env (CfcostTest), key (from
# create_key), route and user (what its records must say), settle (seconds
# record_for waits for a stray second record), upstream_path (a code ref
# called by check_upstream_request with ($name, $request, @extra) to check
# the path the upstream saw).
my %CTX;

# wire_init(env => $env, key => $k, route => ..., user => ..., settle => s,
# upstream_path => sub { ... }): what the helpers below need of the test.
sub wire_init {
    %CTX = (settle => 0.1, @_);
    return;
}


# --------------------------------------------------------------------------
# costs

# The cost of a usage in picodollars (a Math::BigInt); cached input tokens
# at the cached rate, or at the input rate where the model has none.
sub pusd {
    my ($model, $in, $out, $cached) = @_;
    $cached //= 0;
    my ($pi, $po, $pc) = @{ $PRICE{$model} };
    $pc //= $pi;
    return Math::BigInt->new($in)->bsub($cached)->bmul($pi)
        ->badd(Math::BigInt->new($cached)->bmul($pc))
        ->badd(Math::BigInt->new($out)->bmul($po));
}

# round half up to whole micro-USD, then "D.DDDDDD"
sub usd6 {
    my ($p) = @_;
    my $micro = $p->copy->badd(500000)->bdiv(1000000);
    my ($int, $frac) = $micro->copy->bdiv(1000000);
    return sprintf('%s.%06d', $int->bstr, $frac->numify);
}

# tokens estimated from a byte count: one per 4 bytes, rounded up
sub ceil4 { my ($n) = @_; return int(($n + 3) / 4) }

# bytes of a character string in UTF-8, whatever its flag
sub utf8_len { my ($s) = @_; utf8::encode($s); return length $s }

# a usage (in >= 100, out >= $out_min) whose cost is congruent to $residue
# modulo 1e6 pusd
sub usage_with_residue {
    my ($model, $residue, $out_min) = @_;
    my ($pi, $po) = @{ $PRICE{$model} };
    for my $out ($out_min .. $out_min + 50) {
        for my $in (100 .. 20000) {
            return ($in, $out) if ($in * $pi + $out * $po) % 1000000 == $residue;
        }
    }
    die "no usage with residue $residue for $model";
}

# Three tests of the arithmetic above: the rounding at the half, and a
# cached-rate cost.
sub cost_self_checks {
    is(usd6(Math::BigInt->new(500000)), '0.000001', 'self-check: half rounds up');
    is(usd6(Math::BigInt->new(499999)), '0.000000', 'self-check: under half rounds down');
    is(pusd($KIMI, 100, 20, 30)->bstr, '105000000', 'self-check: kimi cached cost');
}


# --------------------------------------------------------------------------
# raw HTTP/1.1 over a socket, bounded by timeouts

# A connection to 127.0.0.1:$port: {sock, buf (bytes read, not yet
# consumed), eof}.
sub connect_to {
    my ($port) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
        Proto => 'tcp', Timeout => 5)
        or die "connect 127.0.0.1:$port: $!";
    binmode $s;
    $s->autoflush(1);
    return { sock => $s, buf => '', eof => 0 };
}

# Writes one request; @h are header name => value pairs, sent in order
# after Host, "Connection: close" and Content-Length (sent when $body is
# defined).  Pairs named _version (default '1.1') and _keep_alive (true:
# no "Connection: close") are options, not headers.  Returns the time the
# request was written.
sub send_request {
    my ($c, $method, $path, $body, @pairs) = @_;
    my (%o, @h);
    while (my ($n, $v) = splice @pairs, 0, 2) {
        if ($n =~ /^_/) { $o{$n} = $v } else { push @h, $n, $v }
    }
    my $req = "$method $path HTTP/" . ($o{_version} // '1.1')
        . "\r\nHost: 127.0.0.1\r\n";
    $req .= "Connection: close\r\n" unless $o{_keep_alive};
    $req .= 'Content-Length: ' . length($body) . "\r\n" if defined $body;
    while (my ($n, $v) = splice @h, 0, 2) { $req .= "$n: $v\r\n" }
    $req .= "\r\n" . ($body // '');
    my $off = 0;
    while ($off < length $req) {
        my $w = syswrite($c->{sock}, $req, length($req) - $off, $off);
        die "write: $!" unless defined $w;
        $off += $w;
    }
    return time;
}

# Reads more bytes into $c->{buf}; returns the count, 0 at EOF, undef on
# timeout or error.
sub fill {
    my ($c, $deadline) = @_;
    return 0 if $c->{eof};
    my $left = $deadline - time;
    return undef if $left <= 0;
    return undef unless IO::Select->new($c->{sock})->can_read($left);
    my $n = sysread($c->{sock}, my $chunk, 65536);
    return undef unless defined $n;
    if ($n == 0) { $c->{eof} = 1; return 0 }
    $c->{buf} .= $chunk;
    return $n;
}

# Reads one response.  Returns {status, headers (lowercase), body (chunked
# decoding done), complete (the body ended properly: last chunk, full
# Content-Length, or the close of a close-delimited body), eof, timed_out,
# reads => [[time, body length so far]], json (the body decoded, if it is
# JSON)}.  Options: timeout (s, default 20); on_data (called with the
# response after each read of chunked data) may return true to stop reading.
sub read_response {
    my ($c, %o) = @_;
    my $deadline = time + ($o{timeout} // 20);
    my $r = { status => 0, headers => {}, body => '', complete => 0,
              eof => 0, timed_out => 0, reads => [] };
    my $i;
    while (($i = index($c->{buf}, "\r\n\r\n")) < 0) {
        my $n = fill($c, $deadline);
        if (!defined $n) { $r->{timed_out} = 1; return $r }
        if ($n == 0)     { $r->{eof} = 1; return $r }
    }
    my $head = substr($c->{buf}, 0, $i);
    substr($c->{buf}, 0, $i + 4, '');
    my ($sl, @hl) = split /\r\n/, $head;
    ($r->{status}) = $sl =~ m{^HTTP/1\.[01] (\d{3})};
    for (@hl) {
        my ($n, $v) = /^([^:]+):\s*(.*?)\s*$/ or next;
        $n = lc $n;
        $r->{headers}{$n} = exists $r->{headers}{$n}
            ? "$r->{headers}{$n}, $v" : $v;
    }
    my $te = lc($r->{headers}{'transfer-encoding'} // '');
    my $cl = $r->{headers}{'content-length'};

    my $more = sub {           # false when the loop must stop
        my $n = fill($c, $deadline);
        if (!defined $n) { $r->{timed_out} = 1; return 0 }
        if ($n == 0)     { $r->{eof} = 1; return 0 }
        return 1;
    };

    if ($te =~ /chunked/) {
        while (1) {
            my $grew = 0;
            while (1) {
                my $j = index($c->{buf}, "\r\n");
                last if $j < 0;
                my ($size) = substr($c->{buf}, 0, $j) =~ /^([0-9a-fA-F]+)/;
                die "bad chunk size line: " . substr($c->{buf}, 0, 40)
                    unless defined $size;
                $size = hex $size;
                if ($size == 0) {
                    # last chunk, no trailers expected
                    last if length($c->{buf}) < $j + 4;
                    substr($c->{buf}, 0, $j + 4, '');
                    $r->{complete} = 1;
                    last;
                }
                last if length($c->{buf}) < $j + 2 + $size + 2;
                $r->{body} .= substr($c->{buf}, $j + 2, $size);
                substr($c->{buf}, 0, $j + 2 + $size + 2, '');
                $grew = 1;
            }
            if ($grew) {
                push @{ $r->{reads} }, [time, length $r->{body}];
                last if $o{on_data} && $o{on_data}->($r);
            }
            last if $r->{complete};
            last unless $more->();
        }
    } elsif (defined $cl) {
        while (length($c->{buf}) < $cl) {
            last unless $more->();
        }
        $r->{body} = substr($c->{buf}, 0, $cl);
        substr($c->{buf}, 0, length $r->{body}, '');
        $r->{complete} = length($r->{body}) == $cl;
        push @{ $r->{reads} }, [time, length $r->{body}];
    } else {
        1 while $more->();
        $r->{body} = $c->{buf};
        $c->{buf} = '';
        $r->{complete} = $r->{eof};
        push @{ $r->{reads} }, [time, length $r->{body}];
    }
    $r->{json} = eval { $JS->decode($r->{body}) };
    return $r;
}

# After a complete response: does the peer close the connection (within
# $t s)?  Returns 1 on EOF, 0 if still open, -1 if unexpected bytes came.
sub peer_closed {
    my ($c, $t) = @_;
    return 1 if $c->{eof};
    my $n = fill($c, time + $t);
    return 0 unless defined $n;
    return $n == 0 ? 1 : -1;
}

# One request on a new connection (closed after the answer); the answer
# as read_response returns it.
sub request {
    my ($port, $method, $path, $body, @h) = @_;
    my $c = connect_to($port);
    send_request($c, $method, $path, $body, @h);
    my $r = read_response($c, timeout => 30);
    close $c->{sock};
    return $r;
}

# request() to the gateway: gw($method, $path, $body, @headers)
sub gw { return request($CTX{env}->port, @_) }

# A POST of $body straight to the emulator, with the operator's token.
sub emu_direct {
    my ($path, $body) = @_;
    return request($CTX{env}->emu_port, 'POST', $path, $body,
        'Content-Type' => 'application/json',
        Authorization  => "Bearer $CfcostTest::TOKEN");
}

# The Workers AI run path of $model in $account (default: the operator's).
sub run_path {
    my ($model, $account) = @_;
    return '/client/v4/accounts/' . ($account // $CfcostTest::ACCOUNT)
        . "/ai/run/$model";
}

# Headers carrying the test's key: 'bearer' (default), 'x-api-key' (any
# other value), or 'none'.
sub auth_headers {
    my ($how) = @_;
    $how //= 'bearer';
    return () if $how eq 'none';
    return (Authorization => "Bearer $CTX{key}{key}") if $how eq 'bearer';
    return ('X-API-Key' => $CTX{key}{key});
}


# --------------------------------------------------------------------------
# bytes

# "created" is the emulator's clock: 0 everywhere, so both sides agree
sub norm_created { my ($s) = @_; $s =~ s/"created":\d+/"created":0/g; return $s }

# Printable bytes for a diagnostic, cut after $max (default 400).
sub show_bytes {
    my ($s, $max) = @_;
    $max //= 400;
    $s = substr($s, 0, $max) . '...' if length $s > $max;
    $s =~ s/([^\x20-\x7e])/sprintf('\\x%02x', ord $1)/ge;
    return $s;
}

# One test: $got is the bytes $exp; on failure, where they first differ.
sub same_bytes {
    my ($got, $exp, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $ok = ok(defined $got && $got eq $exp, $name);
    unless ($ok) {
        $got //= '';
        my $p = 0;
        $p++ while $p < length($exp) && $p < length($got)
            && substr($exp, $p, 1) eq substr($got, $p, 1);
        diag("lengths: got " . length($got) . ", expected " . length($exp)
            . "; first difference at byte $p");
        my $from = $p > 120 ? $p - 120 : 0;
        diag("got      ..." . show_bytes(substr($got, $from, 400)));
        diag("expected ..." . show_bytes(substr($exp, $from, 400)));
    }
    return $ok;
}

# The JSON text with ,"cost_usd":X added as the last field of the (last)
# "usage" object.
sub insert_cost {
    my ($json, $usd) = @_;
    my $s = rindex($json, '"usage":{');
    die "no usage object in: $json" if $s < 0;
    my $i = $s + length('"usage":');
    my $depth = 0;
    for (; $i < length $json; $i++) {
        my $ch = substr($json, $i, 1);
        $depth++ if $ch eq '{';
        if ($ch eq '}') { last if --$depth == 0 }
    }
    my $inner = substr($json, $s + 9, $i - $s - 9);
    my $comma = $inner =~ /\S/ ? ',' : '';
    return substr($json, 0, $i) . $comma . "\"cost_usd\":$usd" . substr($json, $i);
}


# --------------------------------------------------------------------------
# SSE

# SSE events of a byte string (each with its blank-line terminator);
# a trailing unterminated part is returned as the last element too.
sub sse_events {
    my ($s) = @_;
    my @ev;
    while ($s =~ /\G(.*?(?:\r\n\r\n|\n\n))/gcs) { push @ev, $1 }
    my $pos = pos($s) // 0;
    push @ev, substr($s, $pos) if $pos < length $s;
    return @ev;
}

# the text of an event's first "data:" line, or undef
sub event_data {
    my ($ev) = @_;
    return $ev =~ /^data: ?(.*?)\r?\n/s ? $1 : undef;
}

# true for an OpenAI usage chunk: "choices":[] and a "usage" object
sub is_usage_chunk {
    my ($ev) = @_;
    my $d = event_data($ev) // return 0;
    my $j = eval { JSON::PP->new->utf8->decode($d) } or return 0;
    return ref $j eq 'HASH' && ref $j->{choices} eq 'ARRAY'
        && !@{ $j->{choices} } && ref $j->{usage} eq 'HASH';
}

# bytes of the generated text in a stream (what cfcost estimates from):
# the "response" strings, or the chunks' delta contents
sub text_bytes {
    my ($bytes) = @_;
    my ($n, $m) = (0, 0);
    for my $ev (sse_events($bytes)) {
        my $d = event_data($ev) // next;
        my $j = eval { JSON::PP->new->utf8->decode($d) } or next;
        next unless ref $j eq 'HASH';
        $n += utf8_len($j->{response})
            if defined $j->{response} && !ref $j->{response};
        for my $c (@{ ref $j->{choices} eq 'ARRAY' ? $j->{choices} : [] }) {
            my $t = ref $c->{delta} eq 'HASH' ? $c->{delta}{content} : undef;
            $m += utf8_len($t) if defined $t && !ref $t;
        }
    }
    return $n || $m;
}

# the cfcost event of a Workers AI stream, as bytes
our $COST_RE = qr/data: \{"response":"","cfcost":\{[^\n]*\}\}\n\n/;

# The cfcost event cfcost must send for %e: request_id, model, in, out,
# cached, estimated.
sub cost_event_text {
    my (%e) = @_;
    return sprintf('data: {"response":"","cfcost":{"request_id":"%s",'
        . '"model":"%s","input_tokens":%s,"output_tokens":%s,'
        . '"cached_tokens":%s,"total_tokens":%s,"cost_usd":%s,'
        . '"estimated":%s}}' . "\n\n",
        $e{request_id}, $e{model}, $e{in}, $e{out}, $e{cached} // 0,
        $e{in} + $e{out}, usd6(pusd($e{model}, $e{in}, $e{out}, $e{cached})),
        $e{estimated} ? 'true' : 'false');
}

# Offset of the "data: [DONE]" event in a stream, or -1.
sub done_offset {
    my ($bytes) = @_;
    my $off = 0;
    for my $ev (sse_events($bytes)) {
        return $off if $ev =~ /^data: ?\[DONE\]\r?\n/;
        $off += length $ev;
    }
    return -1;
}


# Five tests of a streamed answer's head: status 200, text/event-stream,
# the chunked body ended, no Content-Length, an X-Cfcost-Request-Id.
# Returns the request id.
sub stream_head {
    my ($name, $r) = @_;
    is($r->{status}, 200, "$name: status 200")
        or diag('body: ' . show_bytes($r->{body}));
    like($r->{headers}{'content-type'} // '', qr{^text/event-stream},
        "$name: Content-Type text/event-stream");
    ok($r->{complete}, "$name: the chunked body ended with the last chunk")
        or diag("eof=$r->{eof} timed_out=$r->{timed_out}");
    is($r->{headers}{'content-length'}, undef, "$name: no Content-Length");
    my $rid = $r->{headers}{'x-cfcost-request-id'};
    like($rid // '', qr/^[0-9a-f]{32}$/, "$name: X-Cfcost-Request-Id");
    return $rid;
}


# --------------------------------------------------------------------------
# records

# a flags field in a canonical order, for comparison
sub flag_set {
    my ($flags) = @_;
    return join ',', sort grep { length } split /,/, ($flags // '');
}

# Waits (up to $timeout s, default 5) for the one record of this request
# id; two tests: it came, and it is the only one.
sub record_for {
    my ($rid, $name, $timeout) = @_;
    my $env = $CTX{env};
    my $rec = $env->wait_record($rid // '-', $timeout // 5);
    ok($rec, "$name: a record for request id " . ($rid // 'undef'));
    sleep $CTX{settle};
    my @all = grep { ($_->{request_id} // '') eq ($rid // '-') }
        @{ $env->records };
    is(scalar @all, 1, "$name: exactly one record for the request");
    return $rec;
}

# Every field of the record of $rid: %e has model (a Regexp: either of
# several, prices not checked), in/out/cached (undef in: cost 0), status,
# upstream_status, error, flags (undef: not checked), neurons.  Route, user
# and key are the test's (wire_init).
sub check_record {
    my ($name, $rid, %e) = @_;
    my $rec = record_for($rid, $name) or return;
    my $model = $e{model};
    my ($pi, $po, $pc) = !ref $model && $PRICE{$model} ? @{ $PRICE{$model} } : ();
    my %exp = (
        v               => '2',
        route           => $CTX{route},
        user            => $CTX{user},
        key_id          => $CTX{key}{id},
        model           => $model,
        status          => $e{status} // '200',
        upstream_status => $e{upstream_status} // '200',
        error           => $e{error} // '',
        input_tokens    => $e{in} // 0,
        output_tokens   => $e{out} // 0,
        cached_tokens   => $e{cached} // 0,
        cost_pusd       => defined $e{in}
            ? pusd($model, $e{in}, $e{out}, $e{cached})->bstr : '0',
        price_input     => $pi // '',
        price_output    => $po // '',
        price_cached    => $pc // '',
    );
    if (ref $model eq 'Regexp') {       # either of two: no price check
        like($rec->{model} // '', $model, "$name: record model");
        delete @exp{qw(model price_input price_output price_cached)};
    }
    for my $f (sort keys %exp) {
        next if $f =~ /^price_/ && !$PRICE{$model};
        is($rec->{$f}, "$exp{$f}", "$name: record $f");
    }
    is(flag_set($rec->{flags}), flag_set($e{flags} // ''), "$name: record flags")
        unless exists $e{flags} && !defined $e{flags};
    like($rec->{ts_ms} // '', qr/^\d{13}$/, "$name: record ts_ms");
    like($rec->{latency_us} // '', qr/^\d+$/, "$name: record latency_us");
    like($rec->{pricing_version} // '', qr/^2026-11-27\S*[0-9a-f]{8}$/,
        "$name: record pricing_version");
    is($rec->{neurons}, $e{neurons} // '', "$name: record neurons");
    is($rec->{model_asked}, $e{model_asked},
       "$name: record model_asked (only for an unpriced model)");
    return $rec;
}

# The upstream saw one POST, with the operator's token and none of the
# client's credentials; the path is checked by the test's upstream_path
# (called with $name, the request and @extra).  Returns the upstream body
# as bytes.
sub check_upstream_request {
    my ($name, $reqs, @extra) = @_;
    my $key = $CTX{key}{key};
    is(scalar @$reqs, 1, "$name: one upstream request")
        or diag(CfcostTest::_show($reqs));
    my $q = $reqs->[-1] || { headers => {} };
    is($q->{method}, 'POST', "$name: upstream method");
    $CTX{upstream_path}->($name, $q, @extra);
    is($q->{headers}{authorization}, "Bearer $CfcostTest::TOKEN",
        "$name: upstream Authorization is the operator's token");
    is($q->{headers}{'x-api-key'}, undef, "$name: no X-API-Key upstream");
    is($q->{headers}{cookie}, undef, "$name: no Cookie upstream");
    ok(!grep({ index($_ // '', $key) >= 0 } values %{ $q->{headers} }),
        "$name: the client's key appears in no upstream header");
    my $b = $q->{body} // '';
    utf8::encode($b);
    return $b;
}

# one test: no record appeared since there were $before
sub no_new_records_since {
    my ($before, $name) = @_;
    sleep 0.5;
    is($CTX{env}->record_count, $before, "$name: no record");
}

# A Workers AI error as the client got it ($r), against the emulator's
# own answer ($emu): %a has status, upstream_status, passthrough (true:
# the emulator's bytes, unchanged; else own_error, a code ref called with
# $r, checks cfcost's own error), error (a regex for the record's), model.
# No cost; one record of the test's route and user, with cost 0.  Returns
# the record.
sub check_upstream_error {
    my ($name, $r, $emu, %a) = @_;
    is($r->{status}, $a{status}, "$name: status $a{status}")
        or diag('body: ' . show_bytes($r->{body}));
    is($emu->{status}, $a{upstream_status}, "$name: (emulator direct: $a{upstream_status})");
    like($r->{headers}{'content-type'} // '', qr{^application/json},
        "$name: Content-Type application/json");
    if ($a{passthrough}) {
        same_bytes($r->{body}, $emu->{body}, "$name: body = the emulator's, unchanged");
    } else {
        $a{own_error}->($r);
    }
    is($r->{headers}{'x-cfcost-cost-usd'}, undef, "$name: no X-Cfcost-Cost-USD");
    my $rid = $r->{headers}{'x-cfcost-request-id'};
    like($rid // '', qr/^[0-9a-f]{32}$/, "$name: X-Cfcost-Request-Id");
    my $rec = record_for($rid, $name);
    if ($rec) {
        is($rec->{route}, $CTX{route}, "$name: record route");
        is($rec->{status}, "$a{status}", "$name: record status");
        is($rec->{upstream_status}, "$a{upstream_status}", "$name: record upstream_status");
        like($rec->{error} // '', $a{error}, "$name: record error");
        is($rec->{cost_pusd}, '0', "$name: record cost_pusd 0");
        is($rec->{model}, $a{model}, "$name: record model");
        is($rec->{user}, $CTX{user}, "$name: record user");
    }
    return $rec;
}

# Two tests over all the records of the test: request ids are unique, and
# every record has the test's route.
sub check_all_records {
    my $recs = $CTX{env}->records;
    my %seen;
    $seen{ $_->{request_id} // '' }++ for @$recs;
    is(scalar(keys %seen), scalar(@$recs), 'request ids are unique');
    my @other = grep { ($_->{route} // '') ne $CTX{route} } @$recs;
    is(scalar @other, 0, "every record has route $CTX{route}")
        or diag(CfcostTest::_show([@other[0 .. ($#other > 3 ? 3 : $#other)]]));
}

1;
