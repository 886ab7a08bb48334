# The OpenAI-compatible route: POST /v1/chat/completions and GET /v1/models.
#
# Every answer is compared with the emulator's own answer to the same body,
# fetched straight from the emulator's port: a non-stream 200 is the
# upstream OpenAI object byte for byte plus "cost_usd" as the last field of
# its usage; a stream passes through unchanged, the usage chunk gaining
# "cost_usd" when the client asked for it and vanishing when only cfcost
# did.  Costs are computed here (integer picodollars, half-up rounding to 6
# decimals), what reached the upstream is checked, and every request leaves
# exactly one record with route "openai".  Errors made by cfcost are OpenAI
# error objects; Workers AI's errors pass through unchanged.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use CfcostTest;
use CfcostWire qw($L8 $KIMI $OSS $TL usd6 pusd ceil4 utf8_len
    usage_with_residue cost_self_checks wire_init gw emu_direct auth_headers
    norm_created show_bytes same_bytes insert_cost sse_events event_data
    is_usage_chunk text_bytes record_for check_record check_upstream_request
    no_new_records_since check_all_records stream_head check_upstream_error);

my $JS = JSON::PP->new->utf8->canonical;
my $OA_UPSTREAM = "/client/v4/accounts/$CfcostTest::ACCOUNT/ai/v1/chat/completions";

# an event that carries usage and nothing else: OpenAI's usage chunk, or
# Workers AI's native {"response":"","usage"} event
sub usage_only {
    my ($ev) = @_;
    return 1 if is_usage_chunk($ev);
    my $d = event_data($ev) // return 0;
    my $j = eval { JSON::PP->new->utf8->decode($d) } or return 0;
    return ref $j eq 'HASH' && ref $j->{usage} eq 'HASH' && !exists $j->{choices}
        && !(defined $j->{response} && length $j->{response});
}

cost_self_checks();

my $env = CfcostTest->start;
my $k = $env->create_key(user => 'oai', name => 'openai test');
$env->allow_error(qr/upstream prematurely closed/,
    qr/client intended to send too large body/);
wire_init(env => $env, key => $k, route => 'openai', user => 'oai',
    # the upstream path is the OpenAI endpoint
    upstream_path => sub {
        my ($name, $q) = @_;
        is($q->{path}, $OA_UPSTREAM, "$name: upstream path");
    });


# --------------------------------------------------------------------------
# 1. non-stream answers: the upstream object plus cost_usd

sub openai_ok {
    my (%a) = @_;
    my $name = $a{name};
    my $body = $a{body} // $JS->encode({
        model    => $a{model},
        messages => $a{messages}
            // [{ role => 'user', content => $a{content} }],
        %{ $a{extra} || {} },
    });
    $env->emu_clear;
    my $r = gw('POST', '/v1/chat/completions', $body,
        'Content-Type' => 'application/json', auth_headers($a{auth}),
        @{ $a{headers} || [] });
    my $reqs = $env->emu_requests;
    my $emu = emu_direct($OA_UPSTREAM, $body);

    is($r->{status}, 200, "$name: status 200")
        or diag('body: ' . show_bytes($r->{body}));
    like($r->{headers}{'content-type'} // '', qr{^application/json},
        "$name: Content-Type application/json");
    ok($r->{complete}, "$name: complete body");

    my $up = check_upstream_request($name, $reqs);
    same_bytes($up, $body, "$name: upstream body is the client's, byte for byte");

    my $usd = usd6(pusd($a{model}, $a{in}, $a{out}, $a{cached}));
    is($emu->{status}, 200, "$name: (emulator direct: 200)");
    same_bytes(norm_created($r->{body}),
        insert_cost(norm_created($emu->{body}), $usd),
        "$name: body = the emulator's object with cost_usd $usd last in usage");

    my $j = $r->{json};
    ok(ref $j eq 'HASH' && ref $j->{usage} eq 'HASH', "$name: JSON with usage")
        or return;
    is($j->{object}, 'chat.completion', "$name: object chat.completion");
    is($j->{model}, $a{model}, "$name: model");
    is($j->{usage}{prompt_tokens}, $a{in}, "$name: usage.prompt_tokens");
    is($j->{usage}{completion_tokens}, $a{out}, "$name: usage.completion_tokens");
    is(sprintf('%.6f', $j->{usage}{cost_usd} // -1), $usd, "$name: usage.cost_usd");
    like($r->{body}, qr/"cost_usd":\d+\.\d{6}\}/,
        "$name: cost_usd is a 6-decimal JSON number closing usage");
    is($r->{headers}{'x-cfcost-cost-usd'}, $usd, "$name: X-Cfcost-Cost-USD");
    is($r->{headers}{'x-cfcost-input-tokens'}, "$a{in}", "$name: X-Cfcost-Input-Tokens");
    is($r->{headers}{'x-cfcost-output-tokens'}, "$a{out}", "$name: X-Cfcost-Output-Tokens");
    my $rid = $r->{headers}{'x-cfcost-request-id'};
    like($rid // '', qr/^[0-9a-f]{32}$/, "$name: X-Cfcost-Request-Id");
    check_record($name, $rid, model => $a{model}, in => $a{in},
        out => $a{out}, cached => $a{cached}, neurons => $a{neurons});
    return $r;
}

my @tie  = usage_with_residue($L8, 500000, 0);
my @under = usage_with_residue($L8, 499000, 1);
ok(pusd($L8, @tie)->copy->bmod(1000000) == 500000, '(the tie case is a tie)');

openai_ok(name => 'bearer key, small usage', model => $L8,
    content => 'Hello there [emu:usage 10 20]', in => 10, out => 20);
openai_ok(name => 'X-API-Key', auth => 'x-api-key', model => $L8,
    content => 'Hello there [emu:usage 10 20]', in => 10, out => 20);
openai_ok(name => 'natural usage (no directive)', model => $L8,
    content => 'the quick brown fox', in => 4, out => 11);
openai_ok(name => 'one million each', model => $L8,
    content => 'big [emu:usage 1000000 1000000]', in => 1000000, out => 1000000);
openai_ok(name => 'the most input tokens billed (2^24)', model => $L8,
    content => 'huge [emu:usage 16777216 1000]', in => 16777216, out => 1000);
openai_ok(name => 'zero tokens', model => $L8,
    content => 'none [emu:usage 0 0]', in => 0, out => 0);
openai_ok(name => "exact half rounds up (@tie)", model => $L8,
    content => "tie [emu:usage @tie]", in => $tie[0], out => $tie[1]);
openai_ok(name => "just under half rounds down (@under)", model => $L8,
    content => "under [emu:usage @under]", in => $under[0], out => $under[1]);
openai_ok(name => 'gpt-oss', model => $OSS,
    content => 'oss [emu:usage 1234 567]', in => 1234, out => 567);
openai_ok(name => 'tinyllama', model => $TL,
    content => 'tiny [emu:usage 100000 50000]', in => 100000, out => 50000);
openai_ok(name => 'kimi: cached tokens at the cached rate', model => $KIMI,
    content => 'again [emu:usage 100 20] [emu:cached 30]',
    in => 100, out => 20, cached => 30);
openai_ok(name => 'kimi: all input cached', model => $KIMI,
    content => 'all cached [emu:usage 1000 1] [emu:cached 1000]',
    in => 1000, out => 1, cached => 1000);
openai_ok(name => 'kimi: reasoning tokens are part of completion_tokens',
    model => $KIMI, content => 'think [emu:usage 10 40] [emu:reasoning 25]',
    in => 10, out => 40);
openai_ok(name => 'kimi: cached and reasoning', model => $KIMI,
    content => 'both [emu:usage 5000 700] [emu:cached 4000] [emu:reasoning 600]',
    in => 5000, out => 700, cached => 4000);
openai_ok(name => 'llama (no cached rate): cached tokens at the input rate',
    model => $L8, content => 'cache [emu:usage 100 20] [emu:cached 60]',
    in => 100, out => 20, cached => 60);
openai_ok(name => 'neurons reported', model => $L8,
    content => 'n [emu:usage 3 4] [emu:neurons 2.5]', in => 3, out => 4,
    neurons => '2.5');
openai_ok(name => 'chunked upstream body', model => $L8,
    content => 'chunky [emu:chunked] [emu:usage 7 9]', in => 7, out => 9);
openai_ok(name => 'UTF-8 in the answer', model => $L8,
    content => "caf\x{e9} \x{2713} [emu:utf8] [emu:usage 11 13]", in => 11, out => 13);
openai_ok(name => 'multi-turn conversation', model => $L8,
    messages => [ { role => 'system', content => 'Be brief.' },
                  { role => 'user', content => 'Hi' },
                  { role => 'assistant', content => 'Hello!' },
                  { role => 'user', content => 'Again [emu:usage 21 5]' } ],
    in => 21, out => 5);

# a body written by hand: odd spacing, key order, escapes, a float, extra
# OpenAI options; all of it must reach the upstream unchanged
openai_ok(name => 'hand-written body with options', model => $L8,
    body => qq'{ "temperature" : 0.7,\n  "messages" : [ {"content":"caf\\u00e9 \\"q\\" \\/ [emu:usage 31 17]","role":"user"} ],'
          . qq' "max_tokens":64, "top_p":1.0, "stream": false, "user":"u-1",\n "model":"$L8" }\n',
    in => 31, out => 17);

# a client cookie and extra headers do not reach the upstream
openai_ok(name => 'client cookie and headers stay here', model => $L8,
    content => 'private [emu:usage 1 1]', in => 1, out => 1,
    headers => [Cookie => 'session=secret', 'X-API-Key' => $k->{key},
                'OpenAI-Organization' => 'org-x']);

# no usage in the answer: passed through unchanged, flagged
{
    my $name = 'no usage in the answer';
    my $content = 'quiet please [emu:no-usage]';
    my $body = $JS->encode({ model => $L8,
        messages => [{ role => 'user', content => $content }] });
    $env->emu_clear;
    my $r = gw('POST', '/v1/chat/completions', $body,
        'Content-Type' => 'application/json', auth_headers());
    my $emu = emu_direct($OA_UPSTREAM, $body);
    is($r->{status}, 200, "$name: status 200");
    same_bytes(norm_created($r->{body}), norm_created($emu->{body}),
        "$name: body = the emulator's, unchanged");
    unlike($r->{body}, qr/cost_usd/, "$name: no cost_usd");
    is($r->{headers}{'x-cfcost-usage'}, 'estimated', "$name: X-Cfcost-Usage: estimated");
    my $rid = $r->{headers}{'x-cfcost-request-id'};
    my $rec = record_for($rid, $name);
    if ($rec) {
        like($rec->{flags} // '', qr/(^|,)usage_unknown(,|$)/, "$name: record flag usage_unknown");
        is($r->{headers}{'x-cfcost-cost-usd'}, usd6(Math::BigInt->new($rec->{cost_pusd})),
            "$name: X-Cfcost-Cost-USD = the record's estimate");
        is($rec->{route}, 'openai', "$name: record route");
        is($rec->{status}, '200', "$name: record status");
    }
}


# --------------------------------------------------------------------------
# 2. streams

# A stream through the gateway; returns the response and the upstream body.
sub gw_stream {
    my ($body) = @_;
    $env->emu_clear;
    my $r = gw('POST', '/v1/chat/completions', $body,
        'Content-Type' => 'application/json', auth_headers());
    my $reqs = $env->emu_requests;
    return ($r, $reqs);
}

sub stream_basics {
    my ($name, $r) = @_;
    my $rid = stream_head($name, $r);
    my @ev = sse_events($r->{body});
    like($ev[-1] // '', qr/^data: \[DONE\]\r?\n\r?\n\z/, "$name: [DONE] is last");
    return $rid;
}

# %a: name, model, content, opts (stream_options value, or undef for
# none), in/out/cached (expected usage; undef: none reported)
sub openai_stream {
    my (%a) = @_;
    my $name  = $a{name};
    my $model = $a{model} // $L8;
    my $client = {
        model    => $model,
        messages => [{ role => 'user', content => $a{content} }],
        stream   => JSON::PP::true,
        (exists $a{opts} ? (stream_options => $a{opts}) : ()),
    };
    my $body = $a{body} // $JS->encode($client);
    my $client_usage = ref $a{opts} eq 'HASH'
        && JSON::PP::is_bool($a{opts}{include_usage}) && $a{opts}{include_usage};

    my ($r, $reqs) = gw_stream($body);
    my $rid = stream_basics($name, $r);
    my $up = check_upstream_request($name, $reqs);

    if ($client_usage) {
        same_bytes($up, $body,
            "$name: upstream body is the client's, byte for byte (it asked include_usage)");
    } else {
        my %want = %{ $JS->decode($body) };
        my %o = ref $want{stream_options} eq 'HASH' ? %{ $want{stream_options} } : ();
        $o{include_usage} = JSON::PP::true;
        $want{stream_options} = \%o;
        is_deeply(CfcostTest::decode_json_text($up), \%want,
            "$name: upstream body = the client's JSON plus stream_options.include_usage");
    }

    # what the emulator answers to exactly what the gateway sent
    my $emu = emu_direct($OA_UPSTREAM, $up);
    is($emu->{status}, 200, "$name: (emulator direct: 200)");
    ok($emu->{complete}, "$name: (emulator direct: complete)");
    my $ebody = norm_created($emu->{body});
    my $gbody = norm_created($r->{body});
    my @uev = grep { is_usage_chunk($_) } sse_events($ebody);
    my $have_usage = defined $a{in};
    is(scalar @uev, $have_usage ? 1 : 0,
        "$name: (the emulator sent " . ($have_usage ? 'one usage chunk' : 'no usage chunk') . ')');

    # estimated when the upstream reports no usage
    my ($ein, $eout) = (ceil4(utf8_len($a{content} // '')), ceil4(text_bytes($ebody)));
    my $usd = $have_usage
        ? usd6(pusd($model, $a{in}, $a{out}, $a{cached}))
        : usd6(pusd($model, $ein, $eout));

    # usage-only events (OpenAI's usage chunk, Workers AI's native usage
    # event) are withheld; a client that asked gets one usage chunk, the
    # last, with cost_usd, just before [DONE] -- or one cfcost makes with
    # the estimate when no usage came
    my $expect = '';
    my $last_uc;
    for my $ev (sse_events($ebody)) {
        if (usage_only($ev)) {
            $last_uc = $ev if is_usage_chunk($ev);
            next;
        }
        if ($client_usage && $have_usage && $ev =~ /^data: ?\[DONE\]/) {
            $expect .= insert_cost($last_uc, $usd);
        }
        $expect .= $ev;
    }
    my @gu = grep { is_usage_chunk($_) } sse_events($gbody);
    my $cmp = $gbody;
    if ($client_usage && !$have_usage && @gu == 1) {
        $cmp =~ s/\Q$gu[0]\E//;          # made by cfcost: checked below
    }
    same_bytes($cmp, $expect, $client_usage
        ? "$name: stream = the emulator's, usage withheld, cost_usd $usd"
          . " in the one usage chunk"
        : "$name: stream = the emulator's without the usage events");

    if ($client_usage) {
        is(scalar @gu, 1, "$name: one usage chunk for the client");
        my $j = eval { JSON::PP->new->utf8->decode(event_data($gu[0] // '') // '') };
        my $u = ref $j eq 'HASH' && ref $j->{usage} eq 'HASH' ? $j->{usage} : {};
        is(sprintf('%.6f', $u->{cost_usd} // -1), $usd,
            "$name: usage chunk cost_usd");
        unless ($have_usage) {
            is_deeply([@$u{qw(prompt_tokens completion_tokens total_tokens)},
                       $u->{estimated} ? 1 : 0],
                [$ein, $eout, $ein + $eout, 1],
                "$name: the usage chunk carries the estimate, flagged");
            like($gbody, qr/\Q$gu[0]\Edata: ?\[DONE\]/,
                "$name: the usage chunk just before [DONE]");
        }
    } else {
        is(scalar @gu, 0, "$name: no usage chunk for the client");
        unlike($gbody, qr/cost_usd|"choices":\[\]|"cfcost"|"usage":\{/,
            "$name: nothing of cfcost in the stream");
    }

    unless ($client_usage) {
        # exactly what an OpenAI stream without usage looks like, but for
        # the "usage":null members of the chunks
        my $plain = emu_direct($OA_UPSTREAM, $body);
        (my $g = $gbody) =~ s/,"usage":null//g;
        same_bytes($g, join('', grep { !usage_only($_) }
                                sse_events(norm_created($plain->{body}))),
            "$name: stream = the emulator's stream for the client's body (\"usage\":null aside)");
    }

    my %rec = (model => $model, flags => 'streamed');
    if ($have_usage) {
        %rec = (%rec, in => $a{in}, out => $a{out}, cached => $a{cached});
    } else {
        my $in  = ceil4(utf8_len($a{content}));
        my $out = ceil4(text_bytes($ebody));
        %rec = (%rec, in => $in, out => $out, flags => 'streamed,estimated,usage_unknown');
    }
    check_record($name, $rid, %rec, neurons => $a{neurons});
    return $r;
}

my $T = JSON::PP::true;
my $F = JSON::PP::false;

for my $mode (['client asks include_usage', { include_usage => $T }],
              ['client does not ask', undef],
              ['client asks include_usage:false', { include_usage => $F }])
{
    my ($label, $opts) = @$mode;
    my @o = defined $opts ? (opts => $opts) : ();
    for my $v (['', 'plain'],
               ['[emu:split 1]', 'split 1'],
               ['[emu:split 5]', 'split 5'],
               ['[emu:split 5] [emu:utf8]', 'split 5 + utf8'],
               ['[emu:split 1] [emu:trickle 1]', 'split 1 trickled'],
               ['[emu:crlf]', 'crlf'],
               ['[emu:split 5] [emu:crlf] [emu:utf8]', 'split 5 + crlf + utf8'])
    {
        my ($dirs, $vname) = @$v;
        openai_stream(name => "stream, $label, $vname", @o,
            content => "tell me a story $dirs [emu:usage 100 200]",
            in => 100, out => 200);
    }
    openai_stream(name => "stream, $label, kimi cached", @o, model => $KIMI,
        content => 'again [emu:usage 100 20] [emu:cached 30] [emu:split 5]',
        in => 100, out => 20, cached => 30);
    openai_stream(name => "stream, $label, kimi reasoning", @o, model => $KIMI,
        content => 'think [emu:usage 10 40] [emu:reasoning 25] [emu:split 1]',
        in => 10, out => 40);
}

# other stream_options members are kept when cfcost adds include_usage
openai_stream(name => 'stream, other stream_options kept',
    opts => { include_obfuscation => $F },
    content => 'opts [emu:usage 3 4]', in => 3, out => 4);

# include_usage asked, but the upstream reports none: the estimate
openai_stream(name => 'stream, include_usage, upstream sends no usage',
    opts => { include_usage => $T },
    content => 'nothing to count [emu:no-usage]');
openai_stream(name => 'stream, no include_usage, upstream sends no usage',
    content => 'nothing to count either [emu:no-usage] [emu:split 5]');

# Workers AI may also send its native {"response":"","usage"} event: usage
# only, withheld like the usage chunk
openai_stream(name => 'stream, include_usage, native usage event too',
    opts => { include_usage => $T },
    content => 'both kinds [emu:native-usage] [emu:usage 12 13] [emu:split 5]',
    in => 12, out => 13);
openai_stream(name => 'stream, no include_usage, native usage event too',
    content => 'both kinds again [emu:native-usage] [emu:usage 12 13] [emu:split 1]',
    in => 12, out => 13);

# a hand-written streaming body with include_usage goes up byte for byte
openai_stream(name => 'stream, hand-written body',
    opts => { include_usage => $T },
    body => qq'{"model" : "$L8", "stream":true, "stream_options": {"include_usage" : true},'
          . qq' "temperature":0.25, "messages":[{"role":"user","content":"by hand \\u2713 [emu:usage 9 8]"}]}',
    content => "by hand \x{2713} [emu:usage 9 8]", in => 9, out => 8);

# stream_options in every shape a client may send, in hand-written bodies:
# include_usage is set in it (or it becomes an object that has it), the
# rest is the client's
for my $o (['null', 'null'], ['{}', 'empty'], [qq'{ \n }', 'empty, white space'],
           ['{"include_usage":false}', 'include_usage false'],
           ['{"include_usage":null, "x":[1]}', 'include_usage null, another member'],
           ['{ "x" : 1 }', 'another member only'],
           ['"yes"', 'a string'], ['[true]', 'an array'])
{
    my ($v, $label) = @$o;
    openai_stream(name => "stream, stream_options $label",
        body => qq'{"model":"$L8","stream":true,"stream_options":$v,'
              . qq'"messages":[{"role":"user","content":"shape [emu:usage 5 6]"}]}',
        content => 'shape [emu:usage 5 6]', in => 5, out => 6);
}
openai_stream(name => 'stream, stream_options key escaped',
    body => qq'{"\\u0073tream_options":{"x":2},"model":"$L8","stream":true,'
          . qq'"messages":[{"role":"user","content":"esc [emu:usage 5 6]"}]}',
    content => 'esc [emu:usage 5 6]', in => 5, out => 6);
openai_stream(name => 'stream, no stream_options, white space first',
    body => qq' \n {"model":"$L8","stream":true,'
          . qq'"messages":[{"role":"user","content":"ws [emu:usage 5 6]"}]}',
    content => 'ws [emu:usage 5 6]', in => 5, out => 6);

# --------------------------------------------------------------------------
# 3. errors made by cfcost: OpenAI's error object, plus "detail"

sub openai_error {
    my (%a) = @_;
    my $name = $a{name};
    my $before = $env->record_count;
    $env->emu_clear;
    my $r = gw($a{method} // 'POST', $a{path} // '/v1/chat/completions', $a{body},
        (defined $a{body} ? ('Content-Type' => 'application/json') : ()),
        auth_headers($a{auth}), @{ $a{headers} || [] });
    is($r->{status}, $a{status}, "$name: status $a{status}")
        or diag('body: ' . show_bytes($r->{body}));
    like($r->{headers}{'content-type'} // '', qr{^application/json},
        "$name: Content-Type application/json");
    my $j = $r->{json};
    ok(ref $j eq 'HASH' && ref $j->{error} eq 'HASH', "$name: {\"error\":{...}}")
        or diag('body: ' . show_bytes($r->{body}));
    my $e = ref $j eq 'HASH' && ref $j->{error} eq 'HASH' ? $j->{error} : {};
    is_deeply([sort keys %$j], [qw(detail error)], "$name: members error and detail")
        if ref $j eq 'HASH';
    is_deeply([sort keys %$e], [qw(code message param type)],
        "$name: error has message, type, param, code");
    ok(defined $e->{message} && !ref $e->{message} && length $e->{message},
        "$name: error.message is a string");
    is($e->{type}, $a{type}, "$name: error.type $a{type}");
    ok(exists $e->{param} && !defined $e->{param}, "$name: error.param is null");
    ok(exists $e->{code} && !defined $e->{code}, "$name: error.code is null");
    is($j->{detail}, $e->{message}, "$name: detail = error.message") if ref $j eq 'HASH';
    like($e->{message} // '', $a{message}, "$name: message") if $a{message};
    like($r->{body}, qr/"param":null,"code":null/, "$name: param and code are JSON null");
    like($r->{headers}{'x-cfcost-request-id'} // '', qr/^[0-9a-f]{32}$/,
        "$name: X-Cfcost-Request-Id") unless $a{no_request_id};

    my $reqs = $env->emu_requests;
    is(scalar @$reqs, 0, "$name: nothing went upstream")
        or diag(CfcostTest::_show($reqs));

    if ($a{record}) {
        check_record($name, $r->{headers}{'x-cfcost-request-id'},
            model => $a{model} // '', status => $a{status}, upstream_status => 0,
            model_asked => $a{model_asked}, flags => undef,
            error => $a{error} // 'invalid_request');
    } else {
        no_new_records_since($before, $name);
    }
    return $r;
}

my $good = $JS->encode({ model => $L8,
    messages => [{ role => 'user', content => 'hi [emu:usage 1 1]' }] });

openai_error(name => 'no key', auth => 'none', body => $good,
    status => 401, type => 'authentication_error', message => qr/API key/);
openai_error(name => 'unknown key (Bearer)', body => $good,
    headers => [Authorization => 'Bearer cfk_00000000000000000000000000000000'],
    auth => 'none', status => 401, type => 'authentication_error',
    message => qr/invalid API key/);
openai_error(name => 'unknown key (X-API-Key)', body => $good,
    headers => ['X-API-Key' => 'cfk_00000000000000000000000000000000'],
    auth => 'none', status => 401, type => 'authentication_error',
    message => qr/invalid API key/);
openai_error(name => 'the operator token is no key', body => $good,
    headers => [Authorization => "Bearer $CfcostTest::TOKEN"],
    auth => 'none', status => 401, type => 'authentication_error');
openai_error(name => 'body not JSON', body => '{"model": "x", messages: }',
    status => 400, type => 'invalid_request_error', message => qr/JSON/,
    record => 1);
openai_error(name => 'empty body', body => '',
    status => 400, type => 'invalid_request_error', record => 1);
openai_error(name => 'body a JSON array', body => '[1,2]',
    status => 400, type => 'invalid_request_error', record => 1);
openai_error(name => 'model missing',
    body => $JS->encode({ messages => [{ role => 'user', content => 'hi' }] }),
    status => 400, type => 'invalid_request_error', message => qr/model/,
    record => 1);
openai_error(name => 'model not a string',
    body => $JS->encode({ model => 7, messages => [{ role => 'user', content => 'hi' }] }),
    status => 400, type => 'invalid_request_error', message => qr/model/,
    record => 1);
openai_error(name => 'model not priced',
    body => $JS->encode({ model => '@cf/nobody/unpriced-model',
                          messages => [{ role => 'user', content => 'hi' }] }),
    status => 400, type => 'invalid_request_error',
    message => qr{\@cf/nobody/unpriced-model}, record => 1,
    model => '(unpriced)', model_asked => '@cf/nobody/unpriced-model');
openai_error(name => 'model without @cf/ (an OpenAI name)',
    body => $JS->encode({ model => 'gpt-4o',
                          messages => [{ role => 'user', content => 'hi' }] }),
    status => 400, type => 'invalid_request_error', message => qr{gpt-4o},
    record => 1, model => '(unpriced)', model_asked => 'gpt-4o');
openai_error(name => 'messages missing',
    body => $JS->encode({ model => $L8 }),
    status => 400, type => 'invalid_request_error', message => qr/messages/,
    record => 1, model => $L8);
openai_error(name => 'messages not an array',
    body => $JS->encode({ model => $L8, messages => 'hi' }),
    status => 400, type => 'invalid_request_error', message => qr/messages/,
    record => 1, model => $L8);
openai_error(name => 'messages empty',
    body => $JS->encode({ model => $L8, messages => [] }),
    status => 400, type => 'invalid_request_error', message => qr/messages/,
    record => 1, model => $L8);
openai_error(name => 'a message without role',
    body => $JS->encode({ model => $L8, messages => [{ content => 'hi' }] }),
    status => 400, type => 'invalid_request_error', message => qr/messages/,
    record => 1, model => $L8);
# "prompt" is Workers AI's, not OpenAI's: the chat-completions endpoint
# needs messages, and nothing malformed is forwarded
openai_error(name => 'prompt instead of messages',
    body => $JS->encode({ model => $L8, prompt => 'hi [emu:usage 1 1]' }),
    status => 400, type => 'invalid_request_error', message => qr/messages/,
    record => 1, model => $L8);
openai_error(name => 'GET on the chat route', method => 'GET', auth => 'none',
    status => 405, type => 'invalid_request_error');
openai_error(name => 'body over client_max_body_size',
    body => '{"model":"' . $L8 . '","messages":[{"role":"user","content":"'
            . ('x' x (1024 * 1024 + 10)) . '"}]}',
    status => 413, type => 'invalid_request_error', no_request_id => 1);


# --------------------------------------------------------------------------
# 4. Workers AI's errors pass through unchanged

sub upstream_error {
    my (%a) = @_;
    my $name = $a{name};
    my $body = $JS->encode({ model => $a{model} // $L8,
        messages => [{ role => 'user', content => "oops $a{directive}" }],
        ($a{stream} ? (stream => JSON::PP::true) : ()) });
    my ($r, $reqs) = gw_stream($body);
    my $up = check_upstream_request($name, $reqs);
    my $emu = emu_direct($OA_UPSTREAM, $up);
    check_upstream_error($name, $r, $emu, %a, model => $a{model} // $L8,
        own_error => sub {
            my ($r) = @_;
            my $j = $r->{json};
            ok(ref $j eq 'HASH' && ref $j->{error} eq 'HASH'
               && defined $j->{error}{message} && !ref $j->{error}{message}
               && $j->{error}{type} eq $a{type}
               && exists $j->{error}{param} && !defined $j->{error}{param}
               && exists $j->{error}{code} && !defined $j->{error}{code}
               && defined $j->{detail},
               "$name: an OpenAI error object of type $a{type}")
                or diag('body: ' . show_bytes($r->{body}));
        });
}

upstream_error(name => 'upstream 5007 (400)', directive => '[emu:error 5007 400]',
    status => 400, upstream_status => 400, passthrough => 1, error => qr/^cf:5007$/);
upstream_error(name => 'upstream 3040 (429)', directive => '[emu:error 3040 429]',
    status => 429, upstream_status => 429, passthrough => 1, error => qr/^cf:3040$/);
upstream_error(name => 'upstream 3042 (404)', directive => '[emu:error 3042 404]',
    status => 404, upstream_status => 404, passthrough => 1, error => qr/^cf:3042$/);
upstream_error(name => 'upstream 7010 (500)', directive => '[emu:error 7010 500]',
    status => 500, upstream_status => 500, passthrough => 1, error => qr/^cf:7010$/);
upstream_error(name => 'upstream 10000 (401)', directive => '[emu:error 10000 401]',
    status => 401, upstream_status => 401, passthrough => 1, error => qr/^cf:10000$/);
upstream_error(name => 'upstream error sent chunked',
    directive => '[emu:error 5007 400] [emu:chunked]',
    status => 400, upstream_status => 400, passthrough => 1, error => qr/^cf:5007$/);
upstream_error(name => 'upstream error to a stream request', stream => 1,
    directive => '[emu:error 3040 429]',
    status => 429, upstream_status => 429, passthrough => 1, error => qr/^cf:3040$/);
upstream_error(name => '200 with success:false', directive => '[emu:fail200]',
    status => 502, upstream_status => 200, passthrough => 1, error => qr/^cf:3040$/);
upstream_error(name => '200 with success:false to a stream request', stream => 1,
    directive => '[emu:fail200]',
    status => 502, upstream_status => 200, passthrough => 1, error => qr/^cf:3040$/);
upstream_error(name => 'non-JSON 503', directive => '[emu:status 503]',
    status => 503, upstream_status => 503, type => 'api_error', error => qr/\S/);
upstream_error(name => 'HTML 200', directive => '[emu:html200]',
    status => 502, upstream_status => 200, type => 'api_error', error => qr/\S/);
{
    # the connection closes without an answer: a cfcost 502
    my $name = 'connection closed without a response';
    my $body = $JS->encode({ model => $L8,
        messages => [{ role => 'user', content => 'oops [emu:close]' }] });
    my ($r, $reqs) = gw_stream($body);
    check_upstream_request($name, $reqs);
    is($r->{status}, 502, "$name: status 502");
    my $j = $r->{json};
    ok(ref $j eq 'HASH' && ref $j->{error} eq 'HASH'
       && ($j->{error}{type} // '') eq 'api_error' && defined $j->{detail},
       "$name: an OpenAI error object of type api_error")
        or diag('body: ' . show_bytes($r->{body}));
    my $rec = record_for($r->{headers}{'x-cfcost-request-id'}, $name);
    if ($rec) {
        is($rec->{route}, 'openai', "$name: record route");
        is($rec->{status}, '502', "$name: record status");
        is($rec->{upstream_status}, '0', "$name: record upstream_status");
    }
}


# --------------------------------------------------------------------------
# 5. GET /v1/models: every priced model, in OpenAI's list shape

{
    my $name = '/v1/models';
    my $r = gw('GET', '/v1/models', undef);
    my $cf = gw('GET', '/api/ai/models', undef);
    is($r->{status}, 200, "$name: status 200");
    like($r->{headers}{'content-type'} // '', qr{^application/json},
        "$name: Content-Type application/json");
    my $j = $r->{json};
    ok(ref $j eq 'HASH', "$name: a JSON object") or diag(show_bytes($r->{body}));
    $j = {} unless ref $j eq 'HASH';
    is_deeply([sort keys %$j], [qw(data object)], "$name: members object and data");
    is($j->{object}, 'list', "$name: object list");
    my $data = ref $j->{data} eq 'ARRAY' ? $j->{data} : [];
    my $models = ref $cf->{json} eq 'HASH' && ref $cf->{json}{models} eq 'ARRAY'
        ? $cf->{json}{models} : [];
    ok(@$models >= 40, "$name: (/api/ai/models lists " . scalar(@$models) . ' models)');
    is(scalar @$data, scalar @$models, "$name: as many models as /api/ai/models");
    my %prov = map { $_->{id} => $_->{provider} } @$models;
    my (%seen, @bad);
    for my $m (@$data) {
        push @bad, $m unless ref $m eq 'HASH'
            && join(',', sort keys %$m) eq 'created,id,object,owned_by'
            && defined $m->{id} && exists $prov{$m->{id}}
            && ($m->{object} // '') eq 'model'
            && defined $m->{created} && $m->{created} eq '0'
            && ($m->{owned_by} // '') eq $prov{$m->{id}};
        $seen{ ref $m eq 'HASH' ? $m->{id} // '' : '' }++;
    }
    ok(!@bad, "$name: every entry is {id, object:model, created:0, owned_by:<provider>}")
        or diag(CfcostTest::_show([@bad[0 .. ($#bad > 4 ? 4 : $#bad)]]));
    is_deeply([sort keys %seen], [sort keys %prov],
        "$name: the same model ids as /api/ai/models");
    ok(!grep({ $_ > 1 } values %seen), "$name: no id twice");
    like($r->{body}, qr/"created":0[,}]/, "$name: created is the number 0");
    my ($kimi) = grep { ref $_ eq 'HASH' && ($_->{id} // '') eq $KIMI } @$data;
    is($kimi && $kimi->{owned_by}, 'Moonshot AI', "$name: kimi-k2.5 owned_by Moonshot AI");
    my ($l8) = grep { ref $_ eq 'HASH' && ($_->{id} // '') eq $L8 } @$data;
    is($l8 && $l8->{owned_by}, 'Meta', "$name: llama-3.1-8b owned_by Meta");

    # with a key it answers the same; it writes no record
    my $before = $env->record_count;
    my $r2 = gw('GET', '/v1/models', undef, auth_headers());
    is($r2->{status}, 200, "$name with a key: status 200");
    is($r2->{body}, $r->{body}, "$name with a key: the same body");
    no_new_records_since($before, $name);
}


# --------------------------------------------------------------------------
# 6. record ids are unique, every record of this file is route "openai"

check_all_records();

$env->done;
done_testing;
