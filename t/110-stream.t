# Streamed chat ("stream": true): Workers AI's SSE stream passes through as
# it arrives, byte for byte, with one cfcost event added just before
# "data: [DONE]".  The stream is read over a raw socket (chunked decoding
# done here) so that bytes can be timed as they arrive and the connection
# closed early.  The emulator's own bytes for the same request are fetched
# directly and compared with what the gateway sent.  Each request leaves
# exactly one record flagged "streamed" (plus estimated / usage_unknown /
# aborted when the stream was incomplete).  Framings the emulator cannot
# produce (no [DONE], "data:[DONE]", Content-Length or close-delimited
# streams) come last, from a scripted upstream on the emulator's port.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use IO::Select;
use JSON::PP;
use POSIX ();
use Socket ();
use Time::HiRes qw(time sleep);
use CfcostTest;
use CfcostWire qw($L8 $KIMI pusd usd6 ceil4 utf8_len wire_init connect_to
    send_request read_response peer_closed run_path show_bytes same_bytes
    sse_events event_data text_bytes $COST_RE cost_event_text done_offset
    record_for flag_set);

my $JS = JSON::PP->new->utf8->canonical;

is(usd6(pusd($L8, 100, 200)), '0.000194', 'self-check: 100/200 on llama-3.1-8b');

my $env = CfcostTest->start;
my $k = $env->create_key(user => 'streamer', name => 'stream test');
my $n_requests = 0;         # authenticated requests sent to the gateway

$env->allow_error(qr/upstream prematurely closed/);

# records: a stray second record is waited for 0.2 s
wire_init(env => $env, key => $k, settle => 0.2);


# --------------------------------------------------------------------------
# raw HTTP/1.1 over a socket

# A POST of a JSON body on connection $c, left open after the answer;
# the headers %h in name order (_version => '1.0' for an HTTP/1.0
# request).  Returns the time it was sent.
sub post_json {
    my ($c, $path, $body, %h) = @_;
    return send_request($c, 'POST', $path, $body, _keep_alive => 1,
        'Content-Type' => 'application/json', map { $_ => $h{$_} } sort keys %h);
}

sub chat_body {
    my (%a) = @_;
    my $b = {
        ($a{no_model} ? () : (model => $a{model} // $L8)),
        (defined $a{prompt} ? (prompt => $a{prompt})
            : (messages => $a{messages}
               // [{ role => 'user', content => $a{content} }])),
        ($a{stream} // 1 ? (stream => JSON::PP::true) : ()),
    };
    return $JS->encode($b);
}

# A streamed chat through the gateway on a new connection (or $a{conn}).
sub gw_stream {
    my (%a) = @_;
    my $c = $a{conn} // connect_to($env->port);
    my $t0 = post_json($c, '/api/ai/chat', chat_body(%a),
        'X-API-Key' => $k->{key}, %{ $a{headers} || {} });
    $n_requests++;
    my $r = read_response($c, timeout => $a{timeout} // 20,
        on_data => $a{on_data});
    $r->{t0} = $t0;
    $r->{conn} = $c;
    close $c->{sock} unless $a{keep};
    return $r;
}

# The same request sent straight to the emulator (the body the gateway
# sends upstream: the client's without "model").
sub emu_stream {
    my (%a) = @_;
    my $model = $a{model} // $L8;
    my $c = connect_to($env->emu_port);
    post_json($c, run_path($model),
        chat_body(%a, no_model => 1),
        Authorization => "Bearer $CfcostTest::TOKEN",
        Connection => 'close');
    my $r = read_response($c, timeout => 20);
    close $c->{sock};
    return $r;
}

# Checks a completed stream against the emulator's bytes: exactly one
# cfcost event, inserted just before [DONE], everything else identical.
# Returns the request id.
sub check_stream {
    my ($name, $r, $emu, %e) = @_;
    is($r->{status}, 200, "$name: status 200");
    like($r->{headers}{'content-type'} // '', qr{^text/event-stream},
        "$name: Content-Type text/event-stream");
    my $rid = $r->{headers}{'x-cfcost-request-id'};
    like($rid // '', qr/^[0-9a-f]{32}$/, "$name: X-Cfcost-Request-Id");
    ok($r->{complete}, "$name: the chunked body ended with the last chunk")
        or diag("eof=$r->{eof} timed_out=$r->{timed_out}");
    is($emu->{status}, 200, "$name: (emulator direct: 200)");
    ok($emu->{complete}, "$name: (emulator direct: complete)");

    my @found = $r->{body} =~ /($COST_RE)/g;
    is(scalar @found, 1, "$name: one cfcost event");
    my $d = done_offset($emu->{body});
    ok($d >= 0, "$name: (emulator stream has [DONE])");
    my $ev = cost_event_text(request_id => $rid // '', %e);
    my $expect = substr($emu->{body}, 0, $d) . $ev . substr($emu->{body}, $d);
    same_bytes($r->{body}, $expect,
        "$name: body = emulator bytes with the cfcost event before [DONE]")
        or diag("cfcost event got: " . show_bytes($found[0] // '(none)', 600));
    if (@found) {
        my $j = eval {
            JSON::PP->new->utf8->decode(event_data($found[0]))
        };
        ok(ref $j eq 'HASH' && ref $j->{cfcost} eq 'HASH',
            "$name: cfcost event is JSON");
        my $cf = ref $j eq 'HASH' && ref $j->{cfcost} eq 'HASH'
            ? $j->{cfcost} : {};
        is($j->{response}, '', "$name: event response is empty") if ref $j;
        is($cf->{request_id}, $rid, "$name: event request_id = header");
        is($cf->{model}, $e{model}, "$name: event model");
        is($cf->{input_tokens}, $e{in}, "$name: event input_tokens");
        is($cf->{output_tokens}, $e{out}, "$name: event output_tokens");
        is($cf->{cached_tokens}, $e{cached} // 0, "$name: event cached_tokens");
        is($cf->{total_tokens}, $e{in} + $e{out}, "$name: event total_tokens");
        is(defined $cf->{cost_usd} ? sprintf('%.6f', $cf->{cost_usd}) : undef,
            usd6(pusd($e{model}, $e{in}, $e{out}, $e{cached})),
            "$name: event cost_usd");
        ok(JSON::PP::is_bool($cf->{estimated})
            && !!$cf->{estimated} == !!$e{estimated},
            "$name: event estimated is " . ($e{estimated} ? 'true' : 'false'));
        # the last two events: ours, then [DONE]
        my @evs = sse_events($r->{body});
        is($evs[-2] // '', $found[0], "$name: the cfcost event is next to last");
        like($evs[-1] // '', qr/^data: \[DONE\]\r?\n\r?\n\z/,
            "$name: [DONE] is last");
    }
    return $rid;
}

sub check_record {
    my ($name, $rid, %e) = @_;
    my $rec = record_for($rid, $name) or return;
    my $p = pusd($e{model}, $e{in}, $e{out}, $e{cached});
    is($rec->{input_tokens}, "$e{in}", "$name: record input_tokens");
    is($rec->{output_tokens}, "$e{out}", "$name: record output_tokens");
    is($rec->{cached_tokens}, $e{cached} // 0, "$name: record cached_tokens");
    is($rec->{cost_pusd}, $p->bstr, "$name: record cost_pusd");
    is(flag_set($rec->{flags}), flag_set($e{flags}), "$name: record flags")
        or diag("flags: '$rec->{flags}'");
    is($rec->{status}, $e{status} // '200', "$name: record status");
    is($rec->{upstream_status}, '200', "$name: record upstream_status");
    is($rec->{error}, $e{error} // '', "$name: record error");
    is($rec->{model}, $e{model}, "$name: record model");
    is($rec->{user}, 'streamer', "$name: record user");
    is($rec->{key_id}, $k->{id}, "$name: record key_id");
    is($rec->{route}, 'chat', "$name: record route");
    return $rec;
}


# --------------------------------------------------------------------------
# 1. a plain stream with a usage event

{
    my $name = 'plain stream';
    my %a = (content => 'Tell me a story [emu:usage 100 200]');
    my $emu = emu_stream(%a);
    my $r = gw_stream(%a);
    my %e = (model => $L8, in => 100, out => 200, estimated => 0);
    my $rid = check_stream($name, $r, $emu, %e);
    is($r->{headers}{'content-length'}, undef, "$name: no Content-Length");
    my $rec = check_record($name, $rid, %e, flags => 'streamed');
    is($rec->{cost_pusd}, '193600000', "$name: cost_pusd is 193600000")
        if $rec;
}


# --------------------------------------------------------------------------
# 2. chunk boundaries anywhere: every byte split

for my $split (1, 2, 3, 7, 13) {
    for my $var ([], ['crlf'], ['utf8'], ['crlf', 'utf8']) {
        my $dirs = join ' ', "[emu:split $split]", map { "[emu:$_]" } @$var;
        my $name = "split $split" . (@$var ? " + @$var" : '');
        my %a = (content => "split me up please $dirs [emu:usage 100 200]");
        my $emu = emu_stream(%a);
        my $r = gw_stream(%a);
        my %e = (model => $L8, in => 100, out => 200, estimated => 0);
        my $rid = check_stream($name, $r, $emu, %e);
        check_record($name, $rid, %e, flags => 'streamed');
    }
}

# split and trickled, so each piece reaches nginx in its own read
for my $v (['[emu:split 1] [emu:trickle 2]', 'split 1 trickled'],
           ['[emu:split 3] [emu:trickle 3] [emu:crlf]', 'split 3 crlf trickled'],
           ['[emu:split 5] [emu:trickle 3] [emu:utf8]', 'split 5 utf8 trickled'],
           ['[emu:split 2] [emu:trickle 2] [emu:crlf] [emu:utf8]',
            'split 2 crlf utf8 trickled'])
{
    my ($dirs, $name) = @$v;
    my %a = (content => "hi $dirs [emu:usage 100 200]");
    my $emu = emu_stream(%a);
    my $r = gw_stream(%a, timeout => 40);
    my %e = (model => $L8, in => 100, out => 200, estimated => 0);
    my $rid = check_stream($name, $r, $emu, %e);
    check_record($name, $rid, %e, flags => 'streamed');
}


# --------------------------------------------------------------------------
# 3. not held back: events reach the client as they are produced

{
    my $name = 'trickle 300';
    my %a = (content => 'one two three [emu:trickle 300] [emu:usage 3 4]');
    my $emu = emu_stream(%a);
    my $r = gw_stream(%a, timeout => 30);
    my %e = (model => $L8, in => 3, out => 4, estimated => 0);
    my $rid = check_stream($name, $r, $emu, %e);

    # arrival time of the end of each event
    my (@times, $off);
    $off = 0;
    for my $ev (sse_events($r->{body})) {
        $off += length $ev;
        my ($rd) = grep { $_->[1] >= $off } @{ $r->{reads} };
        push @times, $rd ? $rd->[0] : undef;
    }
    my @t = grep { defined } @times;
    ok(@t >= 4, "$name: 4 or more events (" . scalar(@t) . ")");
    my %batches = map { $_ => 1 } @t;
    ok(keys(%batches) >= 4,
        "$name: events came in 4 or more separate reads (" . keys(%batches) . ")");
    if (@t >= 2) {
        my $spread = $t[-1] - $t[0];
        ok($spread >= 0.6,
            sprintf("$name: first event %.3f s before the last (>= 0.6)", $spread));
        my $first = $t[0] - $r->{t0};
        my $total = $t[-1] - $r->{t0};
        ok($first < 2 && $first < $total - 0.6,
            sprintf("$name: first event after %.3f s, the last after %.3f s",
                $first, $total));
    }
    check_record($name, $rid, %e, flags => 'streamed');
}


# --------------------------------------------------------------------------
# 4. chat.completion-shaped stream: the cumulative usage, never the sum of
# the increments

{
    my $name = 'chat-completion stream';
    my %a = (content => 'count these words [emu:chat-completion] [emu:usage 40 9]');
    my $emu = emu_stream(%a);
    my $r = gw_stream(%a);
    # "created" is the emulator's clock: make both sides agree on it
    for ($emu->{body}, $r->{body}) { s/"created":\d+/"created":0/g }
    my $incr = () = $emu->{body} =~ /"completion_tokens":1,/g;
    ok($incr >= 5, "$name: (the emulator sent $incr incremental usages)");
    my %e = (model => $L8, in => 40, out => 9, estimated => 0);
    my $rid = check_stream($name, $r, $emu, %e);
    my $rec = check_record($name, $rid, %e, flags => 'streamed');
    is($rec->{neurons}, '1.7727272510528564', "$name: record neurons") if $rec;
}

# cached input tokens in a stream, on a model with a cached rate
{
    my $name = 'cached tokens in a stream';
    my %a = (model => $KIMI,
             content => 'again [emu:usage 100 20] [emu:cached 30]');
    my $emu = emu_stream(%a);
    my $r = gw_stream(%a);
    my %e = (model => $KIMI, in => 100, out => 20, cached => 30, estimated => 0);
    is(pusd($KIMI, 100, 20, 30)->bstr, '105000000', "$name: (expected cost)");
    my $rid = check_stream($name, $r, $emu, %e);
    check_record($name, $rid, %e, flags => 'streamed');
}

# cumulative usage of a chat-completion stream with cached tokens
{
    my $name = 'chat-completion stream, cached';
    my %a = (model => $KIMI,
        content => 'more words here [emu:chat-completion] [emu:usage 50 8] [emu:cached 20]');
    my $emu = emu_stream(%a, model => $KIMI);
    my $r = gw_stream(%a);
    for ($emu->{body}, $r->{body}) { s/"created":\d+/"created":0/g }
    my %e = (model => $KIMI, in => 50, out => 8, cached => 20, estimated => 0);
    my $rid = check_stream($name, $r, $emu, %e);
    check_record($name, $rid, %e, flags => 'streamed');
}


# --------------------------------------------------------------------------
# 5. no usage event: estimated from the bytes

for my $v (['estimate this answer please [emu:no-usage]', 'no usage'],
           ['and with utf8 [emu:no-usage] [emu:utf8] caf' . "\x{e9}",
            'no usage, utf8'],
           ['split too [emu:no-usage] [emu:split 3] [emu:utf8]',
            'no usage, split 3'])
{
    my ($content, $name) = @$v;
    my %a = (content => $content);
    my $emu = emu_stream(%a);
    my $r = gw_stream(%a);
    my $in  = ceil4(utf8_len($content));
    my $out = ceil4(text_bytes($emu->{body}));
    ok($out > 0, "$name: (estimated output $out from "
        . text_bytes($emu->{body}) . " bytes)");
    my %e = (model => $L8, in => $in, out => $out, estimated => 1);
    my $rid = check_stream($name, $r, $emu, %e);
    check_record($name, $rid, %e, flags => 'streamed,estimated,usage_unknown');
}

# two messages: the prompt text is all their contents
{
    my $name = 'no usage, two messages';
    my @m = ({ role => 'system', content => 'You are terse.' },
             { role => 'user', content => "Say something \x{2713} [emu:no-usage]" });
    my %a = (messages => \@m);
    my $emu = emu_stream(%a);
    my $r = gw_stream(%a);
    my $in  = ceil4(utf8_len(join '', map { $_->{content} } @m));
    my $out = ceil4(text_bytes($emu->{body}));
    my %e = (model => $L8, in => $in, out => $out, estimated => 1);
    my $rid = check_stream($name, $r, $emu, %e);
    check_record($name, $rid, %e, flags => 'streamed,estimated,usage_unknown');
}


# a prompt instead of messages
{
    my $name = 'no usage, prompt';
    my $prompt = "Complete this: once upon a time \x{65e5} [emu:no-usage]";
    my %a = (prompt => $prompt);
    my $emu = emu_stream(%a);
    my $r = gw_stream(%a);
    my %e = (model => $L8, in => ceil4(utf8_len($prompt)),
             out => ceil4(text_bytes($emu->{body})), estimated => 1);
    my $rid = check_stream($name, $r, $emu, %e);
    check_record($name, $rid, %e, flags => 'streamed,estimated,usage_unknown');
}

# --------------------------------------------------------------------------
# 5b. transport: large events, a slow reader, an HTTP/1.0 client

# large events: one event far larger than any buffer
for my $v ([200000, 0], [300000, 1], [1500000, 0]) {
    my ($size, $no_usage) = @$v;
    my $name = "one event of $size bytes" . ($no_usage ? ', no usage' : '');
    my $content = "big [emu:big $size] "
        . ($no_usage ? '[emu:no-usage]' : '[emu:usage 100 200]');
    my %a = (content => $content);
    my $emu = emu_stream(%a);
    my $r = gw_stream(%a, timeout => 30);
    my %e = $no_usage
        ? (model => $L8, in => ceil4(utf8_len($content)),
           out => ceil4($size), estimated => 1)
        : (model => $L8, in => 100, out => 200, estimated => 0);
    is(text_bytes($emu->{body}), $size, "$name: (emulator text size)");
    my $rid = check_stream($name, $r, $emu, %e);
    check_record($name, $rid, %e, flags => $no_usage
        ? 'streamed,estimated,usage_unknown' : 'streamed');
}


# a client that reads slowly (a 4 KB receive buffer: some tens of KB/s):
# nginx must wait for it, not lose or reorder bytes
for my $v (['[emu:big 120000]', 'slow reader, one 120 KB event'],
           ['[emu:big 120000] [emu:split 1000]', 'slow reader, 1000-byte chunks'])
{
    my ($dirs, $name) = @$v;
    my %a = (content => "slow $dirs [emu:usage 100 200]");
    my $emu = emu_stream(%a);
    my $c = connect_to($env->port);
    setsockopt($c->{sock}, Socket::SOL_SOCKET(), Socket::SO_RCVBUF(), 4096);
    post_json($c, '/api/ai/chat', chat_body(%a), 'X-API-Key' => $k->{key});
    $n_requests++;
    sleep 1;
    my $r = read_response($c, timeout => 40);
    close $c->{sock};
    my %e = (model => $L8, in => 100, out => 200, estimated => 0);
    my $rid = check_stream($name, $r, $emu, %e);
    check_record($name, $rid, %e, flags => 'streamed');
}

# an HTTP/1.0 client: no chunked encoding, the close ends the body
{
    my $name = 'HTTP/1.0 client';
    my %a = (content => 'old client [emu:usage 100 200] [emu:split 5]');
    my $emu = emu_stream(%a);
    my $c = connect_to($env->port);
    post_json($c, '/api/ai/chat', chat_body(%a), 'X-API-Key' => $k->{key},
        _version => '1.0');
    $n_requests++;
    my $r = read_response($c, timeout => 20);
    close $c->{sock};
    ok($r->{eof} && !$r->{timed_out}, "$name: the body ends with the close");
    $r->{complete} = $r->{eof};
    my %e = (model => $L8, in => 100, out => 200, estimated => 0);
    my $rid = check_stream($name, $r, $emu, %e);
    check_record($name, $rid, %e, flags => 'streamed');
}


# --------------------------------------------------------------------------
# 6. the upstream dies mid-stream

sub check_broken {
    my ($name, $content, %x) = @_;
    my %a = (content => $content);
    my $emu = emu_stream(%a);
    ok(!$emu->{complete} && $emu->{eof},
        "$name: (the emulator breaks off the stream)");
    my $r = gw_stream(%a);
    is($r->{status}, 200, "$name: status 200");
    my $rid = $r->{headers}{'x-cfcost-request-id'};
    like($rid // '', qr/^[0-9a-f]{32}$/, "$name: X-Cfcost-Request-Id");
    ok(!$r->{complete}, "$name: no last chunk (the client sees the break)");
    ok($r->{eof} && !$r->{timed_out}, "$name: the connection closes")
        or diag("eof=$r->{eof} timed_out=$r->{timed_out}");

    my %e = $x{usage}
        ? (model => $L8, in => $x{usage}[0], out => $x{usage}[1],
           estimated => 0)
        : (model => $L8, in => ceil4(utf8_len($content)),
           out => ceil4(text_bytes($emu->{body})), estimated => 1);
    my $ev = cost_event_text(request_id => $rid // '', %e);
    same_bytes($r->{body}, $emu->{body} . $ev,
        "$name: the events sent, then the cfcost event");
    my $rec = check_record($name, $rid, %e,
        flags => $x{flags}, error => 'upstream_incomplete');
    return $rec;
}

check_broken('upstream dies after 3 events',
    'die early [emu:die-after 3]',
    flags => 'streamed,aborted,estimated,usage_unknown');
check_broken('upstream dies before the first event',
    'die at once [emu:die-after 0]',
    flags => 'streamed,aborted,estimated,usage_unknown');
check_broken('upstream dies after 3 events, split',
    'die early split [emu:die-after 3] [emu:split 4]',
    flags => 'streamed,aborted,estimated,usage_unknown');
{
    # the usage event came, [DONE] did not
    my $content = 'die late [emu:usage 100 200]';
    my %a = (content => $content);
    my $all = emu_stream(%a);
    my $n = scalar sse_events($all->{body});
    check_broken('upstream dies after the usage event',
        "die late [emu:usage 100 200] [emu:die-after " . ($n - 1) . ']',
        usage => [100, 200], flags => 'streamed,aborted');
}


# --------------------------------------------------------------------------
# 7. the client goes away mid-stream

{
    my $name = 'client closes mid-stream';
    my $content = 'a b c d e f g h i j k l m n o [emu:trickle 200] [emu:usage 50 60]';
    my $c = connect_to($env->port);
    post_json($c, '/api/ai/chat', chat_body(content => $content),
        'X-API-Key' => $k->{key});
    $n_requests++;
    my $r = read_response($c, timeout => 10,
        on_data => sub { $_[0]{body} =~ /\n\n/ });
    is($r->{status}, 200, "$name: status 200");
    like($r->{body}, qr/^data: \{"response":"Hello"/, "$name: the first event came");
    unlike($r->{body}, qr/"cfcost"/, "$name: no cost event yet");
    my $rid = $r->{headers}{'x-cfcost-request-id'};
    my $t_close = time;
    close $c->{sock};

    my $rec = record_for($rid, $name, 6);
    if ($rec) {
        my $after = time - $t_close;
        ok($after < 6, sprintf("$name: recorded %.2f s after the close", $after));
        my %f = map { $_ => 1 } split /,/, ($rec->{flags} // '');
        ok($f{streamed} && $f{aborted},
            "$name: flags contain streamed and aborted ($rec->{flags})");
        is($rec->{error}, 'client_closed', "$name: error client_closed");
        is($rec->{upstream_status}, '200', "$name: upstream_status 200");
        if ($f{estimated}) {
            ok($f{usage_unknown}, "$name: estimated with usage_unknown");
            is($rec->{input_tokens}, ceil4(utf8_len($content)),
                "$name: estimated input tokens");
            ok($rec->{output_tokens} >= ceil4(5)
                && $rec->{output_tokens} <= 30,
                "$name: estimated output tokens in range ($rec->{output_tokens})");
            is($rec->{cost_pusd},
                pusd($L8, $rec->{input_tokens}, $rec->{output_tokens})->bstr,
                "$name: cost of the estimate");
        }
        diag("$name: record status $rec->{status}, flags $rec->{flags}, "
            . "tokens $rec->{input_tokens}/$rec->{output_tokens}");
    }
}


# --------------------------------------------------------------------------
# 8. errors on a streaming request: the same JSON as without "stream"

for my $v (['[emu:error 5007 400]', 400, 'cf:5007', qr/5007/],
           ['[emu:fail200]', 502, 'cf:3040', qr/3040/],
           ['[emu:error 3040 429] [emu:chunked]', 429, 'cf:3040', qr/3040/],
           ['[emu:status 503]', 503, qr/\S/, undef])
{
    my ($dir, $status, $error, $detail) = @$v;
    my $name = "stream error $dir";
    my $content = "fail please $dir";

    my $plain = $env->chat(key => $k->{key}, content => $content);
    $n_requests++;
    my $prid = $plain->{headers}{'x-cfcost-request-id'};

    my $r = gw_stream(content => $content);
    is($r->{status}, $status, "$name: status $status");
    is($r->{status}, $plain->{status}, "$name: status as without stream");
    like($r->{headers}{'content-type'} // '', qr{^application/json},
        "$name: application/json");
    ok($r->{complete}, "$name: complete body");
    my $d = ref $r->{json} eq 'HASH' ? $r->{json}{detail} : undef;
    ok(defined $d && !ref $d && length $d, "$name: {\"detail\": string}")
        or diag("body: " . show_bytes($r->{body}, 600));
    is_deeply([sort keys %{ ref $r->{json} eq 'HASH' ? $r->{json} : {} }],
        ['detail'], "$name: only detail");
    like($d // '', $detail, "$name: detail names the code") if $detail;
    is($d, (ref $plain->{json} eq 'HASH' ? $plain->{json}{detail} : '-'),
        "$name: detail as without stream");
    is($r->{body}, $plain->{body}, "$name: body identical to the non-stream one");
    unlike($r->{body}, qr/cfcost"/, "$name: no cost event");
    my $rid = $r->{headers}{'x-cfcost-request-id'};
    like($rid // '', qr/^[0-9a-f]{32}$/, "$name: X-Cfcost-Request-Id");

    my $rec = record_for($rid, $name);
    record_for($prid, "$name (non-stream)");
    if ($rec) {
        is($rec->{status}, "$status", "$name: record status");
        CfcostTest::match($rec->{error}, $error, "$name: record error");
        is($rec->{cost_pusd}, '0', "$name: record cost_pusd 0");
        unlike($rec->{flags} // '', qr/aborted/, "$name: not flagged aborted");
    }
}


# --------------------------------------------------------------------------
# 9. keep-alive: two streams on one connection

{
    my $name = 'keep-alive';
    my $c = connect_to($env->port);
    my @rid;
    for my $i (1, 2) {
        my %a = (content => "stream number $i [emu:usage $i " . (10 * $i) . ']');
        my $emu = emu_stream(%a);
        my $r = gw_stream(%a, conn => $c, keep => 1);
        my %e = (model => $L8, in => $i, out => 10 * $i, estimated => 0);
        push @rid, check_stream("$name #$i", $r, $emu, %e);
        isnt(lc($r->{headers}{connection} // ''), 'close',
            "$name #$i: the connection stays open");
        last unless $r->{complete};
    }
    is(peer_closed($c, 0.3), 0, "$name: nothing more on the connection");
    close $c->{sock};
    isnt($rid[0], $rid[1], "$name: distinct request ids") if @rid == 2;
    for my $i (1 .. @rid) {
        check_record("$name #$i", $rid[$i - 1], model => $L8, in => $i,
            out => 10 * $i, flags => 'streamed');
    }
}


# --------------------------------------------------------------------------
# streams in parallel: each keeps its own state

{
    my @cases = map {
        my $i = $_;
        my @d = ("[emu:trickle 5]", "[emu:split " . (2 + $i * 3) . "]");
        push @d, '[emu:crlf]' if $i % 2;
        push @d, '[emu:utf8]' if $i % 3 == 0;
        push @d, $i % 4 == 3 ? '[emu:no-usage]' : "[emu:usage $i " . (100 + $i) . ']';
        { i => $i, content => "parallel stream $i " . join(' ', @d) }
    } 1 .. 8;
    for my $c (@cases) {
        $c->{emu} = emu_stream(content => $c->{content});
        $c->{conn} = connect_to($env->port);
    }
    for my $c (@cases) {
        post_json($c->{conn}, '/api/ai/chat',
            chat_body(content => $c->{content}), 'X-API-Key' => $k->{key});
        $n_requests++;
    }
    for my $c (@cases) {
        my $name = "parallel #$c->{i}";
        my $r = read_response($c->{conn}, timeout => 40);
        close $c->{conn}{sock};
        my $est = $c->{content} =~ /no-usage/;
        my %e = $est
            ? (model => $L8, in => ceil4(utf8_len($c->{content})),
               out => ceil4(text_bytes($c->{emu}{body})), estimated => 1)
            : (model => $L8, in => $c->{i}, out => 100 + $c->{i},
               estimated => 0);
        my $rid = check_stream($name, $r, $c->{emu}, %e);
        check_record($name, $rid, %e, flags => $est
            ? 'streamed,estimated,usage_unknown' : 'streamed');
    }
}

# a normal request still works afterwards, and the stream count is right
{
    my $r = $env->chat(key => $k->{key}, content => 'done [emu:usage 1 1]');
    $n_requests++;
    is($r->{status}, 200, 'non-stream request afterwards: 200');
    my $recs = $env->wait_records($n_requests, 5);
    sleep 0.5;
    $recs = $env->records;
    is(scalar @$recs, $n_requests, "one record per request ($n_requests)");
    my %seen;
    $seen{ $_->{request_id} // '' }++ for @$recs;
    is(scalar(keys %seen), scalar(@$recs), 'request ids are unique');
}


# --------------------------------------------------------------------------
# 10. framings the emulator does not produce, from a scripted upstream on
# the emulator's port: a stream that ends cleanly without [DONE],
# "data:[DONE]" without the space, a Content-Length framed stream, a
# close-delimited one.

my $USAGE_EV = 'data: {"response":"","usage":{"prompt_tokens":10,'
    . '"completion_tokens":20,"total_tokens":30}}' . "\n\n";
my $WORDS = join '', map { "data: {\"response\":\"$_\"}\n\n" }
    'Hi', ' there', ' friend';
my $NO_DONE_TEXT = 'Hi there friend';

my %FAKE = (
    nodone      => { body => $WORDS . $USAGE_EV, frame => 'chunked' },
    nodone_est  => { body => $WORDS, frame => 'chunked' },
    nospace     => { body => $WORDS . $USAGE_EV . "data:[DONE]\n\n",
                     frame => 'chunked' },
    length      => { body => $WORDS . $USAGE_EV . "data: [DONE]\n\n",
                     frame => 'length' },
    close       => { body => $WORDS . $USAGE_EV . "data: [DONE]\n\n",
                     frame => 'close' },
    close_nodone => { body => $WORDS . $USAGE_EV, frame => 'close' },
    # the last event without its line end: the client's partial line is
    # ended before the cfcost event, which would otherwise be glued to it
    unterminated => { body => $WORDS . substr($USAGE_EV, 0, -2),
                      frame => 'chunked', sep => "\n\n" },
);

sub fake_response {
    my ($case) = @_;
    # a status line nginx accepts, then a header it refuses (too big)
    return "HTTP/1.1 200 OK\r\nX-Big: " . ('x' x 20000) . "\r\n\r\n"
        if $case eq 'bigheader';
    my $f = $FAKE{$case}
        or return "HTTP/1.1 500 X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    my $h = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        . "Cache-Control: no-cache\r\nConnection: close\r\n";
    return $h . 'Content-Length: ' . length($f->{body}) . "\r\n\r\n" . $f->{body}
        if $f->{frame} eq 'length';
    return $h . "\r\n" . $f->{body} if $f->{frame} eq 'close';
    # chunked, one event a chunk
    my $out = $h . "Transfer-Encoding: chunked\r\n\r\n";
    for my $ev (sse_events($f->{body})) {
        $out .= sprintf("%x\r\n%s\r\n", length $ev, $ev);
    }
    return $out . "0\r\n\r\n";
}

$env->stop_emulator;
my $fake_pid;
{
    my $l;
    my $until = time + 5;
    until ($l = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
               LocalPort => $env->emu_port, Listen => 16, ReuseAddr => 1,
               Proto => 'tcp'))
    {
        die "cannot listen on the emulator port: $!" if time > $until;
        sleep 0.1;
    }
    $fake_pid = fork;
    die "fork: $!" unless defined $fake_pid;
    if ($fake_pid == 0) {
        alarm 120;                          # never outlives the test
        while (my $c = $l->accept) {
            binmode $c;
            my $buf = '';
            my $dl = time + 5;
            my $sel = IO::Select->new($c);
            while ($buf !~ /\r\n\r\n/ && $sel->can_read($dl - time)) {
                sysread($c, $buf, 65536, length $buf) or last;
            }
            my ($len) = $buf =~ /^Content-Length:\s*(\d+)/mi;
            my $hl = index($buf, "\r\n\r\n") + 4;
            while (length($buf) < $hl + ($len // 0) && $sel->can_read($dl - time)) {
                sysread($c, $buf, 65536, length $buf) or last;
            }
            my ($case) = $buf =~ /case:(\w+)/;
            my $resp = fake_response($case // '');
            syswrite($c, $resp);
            close $c;
        }
        POSIX::_exit(0);
    }
    close $l;
}

for my $v (['nodone', 0], ['nodone_est', 1], ['nospace', 0], ['length', 0],
           ['close', 0], ['close_nodone', 0], ['unterminated', 0])
{
    my ($case, $est) = @$v;
    my $name = "scripted upstream: $case";
    my $content = "case:$case";
    my $up = $FAKE{$case}{body};
    my $r = gw_stream(content => $content);
    my $rid = $r->{headers}{'x-cfcost-request-id'};
    is($r->{status}, 200, "$name: status 200");
    like($r->{headers}{'content-type'} // '', qr{^text/event-stream},
        "$name: text/event-stream");
    ok($r->{complete}, "$name: the body ends with the last chunk")
        or diag("eof=$r->{eof} timed_out=$r->{timed_out}");
    my %e = $est
        ? (model => $L8, in => ceil4(length $content),
           out => ceil4(length $NO_DONE_TEXT), estimated => 1)
        : (model => $L8, in => 10, out => 20, estimated => 0);
    my $ev = cost_event_text(request_id => $rid // '', %e);
    my $d = $up =~ /(data: ?\[DONE\]\n\n)\z/ ? length($up) - length($1)
                                              : length $up;
    my $expect = substr($up, 0, $d) . ($FAKE{$case}{sep} // '') . $ev
        . substr($up, $d);
    same_bytes($r->{body}, $expect, "$name: body = upstream bytes with the cfcost event "
        . ($d < length $up ? 'before [DONE]' : 'at the end'));
    check_record($name, $rid, %e, flags => $est
        ? 'streamed,estimated,usage_unknown' : 'streamed');
}

# nginx refuses the upstream's headers after its "200": the client gets
# nginx's 502 as JSON, and the record does not claim Workers AI said 200
{
    my $name = 'scripted upstream: a header nginx refuses';
    my $r = gw_stream(content => 'case:bigheader');
    my $rid = $r->{headers}{'x-cfcost-request-id'};
    is($r->{status}, 502, "$name: 502");
    ok($r->{json} && defined $r->{json}{detail}, "$name: a JSON detail");
    my $rec = $env->wait_record($rid // '', 5);
    is($rec && $rec->{upstream_status}, '0', "$name: no upstream status recorded");
    is($rec && $rec->{error}, 'upstream_unreachable', "$name: error");
    $env->allow_error(qr/upstream sent too big header/);
}

CfcostTest::_stop_pid($fake_pid, 'TERM', 3);

{
    my $recs = $env->wait_records($n_requests, 5);
    sleep 0.3;
    is($env->record_count, $n_requests,
        "one record per request, all told ($n_requests)");
}

$env->done;
done_testing;
