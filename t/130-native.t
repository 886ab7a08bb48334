# The Cloudflare-native route: POST /client/v4/accounts/{any}/ai/run/{model}
# with the cfcost key as the Bearer token, for Cloudflare SDKs and curl.
#
# The request goes to the operator's account with the operator's token and
# the client's body bytes untouched.  A 200 is Workers AI's envelope byte
# for byte plus "cost_usd" as the last field of result.usage (compared with
# the emulator's own answer to the same body, fetched from its port); a
# stream is Workers AI's plus one cfcost event before "data: [DONE]".
# Costs are computed here in integer picodollars; each request leaves one
# record with route "native".  cfcost's own errors are Cloudflare error
# envelopes (plus "detail"); Workers AI's pass through unchanged.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use CfcostTest;
use CfcostWire qw($L8 $KIMI $OSS $BGE $COST_RE usd6 pusd ceil4
    utf8_len usage_with_residue cost_self_checks wire_init gw emu_direct
    run_path auth_headers norm_created show_bytes same_bytes insert_cost
    sse_events event_data text_bytes cost_event_text done_offset record_for
    check_record check_upstream_request no_new_records_since
    check_all_records stream_head check_upstream_error);

my $L8E  = '%40cf%2Fmeta%2Fllama-3.1-8b-instruct';

my $JS = JSON::PP->new->utf8->canonical;

sub uri_unescape { my ($s) = @_; $s =~ s/%([0-9A-Fa-f]{2})/chr hex $1/ge; return $s }

cost_self_checks();

my $env = CfcostTest->start;
my $k = $env->create_key(user => 'native', name => 'native test');
$env->allow_error(qr/upstream prematurely closed/,
    qr/client intended to send too large body/);
wire_init(env => $env, key => $k, route => 'native', user => 'native',
    # the operator's account and the model; the model may go up as it is
    # or percent-encoded: both name it
    upstream_path => sub {
        my ($name, $q, $model) = @_;
        is(uri_unescape($q->{path} // ''), run_path($model),
            "$name: upstream path is the operator's account and the model");
        like($q->{path} // '', qr{^/client/v4/accounts/\Q$CfcostTest::ACCOUNT\E/ai/run/},
            "$name: upstream path names the operator's account");
    });

sub make_body {
    my (%a) = @_;
    return $a{body} if defined $a{body};
    return $JS->encode({
        (defined $a{prompt} ? (prompt => $a{prompt})
            : (messages => $a{messages}
               // [{ role => 'user', content => $a{content} }])),
        ($a{stream} ? (stream => JSON::PP::true) : ()),
        %{ $a{extra} || {} },
    });
}


# --------------------------------------------------------------------------
# 1. non-stream answers: Workers AI's envelope plus cost_usd

# %a: name, model, path_model (as written in the client's path), account,
# body | content | prompt | messages, in/out/cached, neurons
sub native_ok {
    my (%a) = @_;
    my $name  = $a{name};
    my $model = $a{model} // $L8;
    my $body  = make_body(%a);
    $env->emu_clear;
    my $r = gw('POST', run_path($a{path_model} // $model, $a{account} // 'client-account-1'),
        $body, 'Content-Type' => 'application/json', auth_headers(),
        @{ $a{headers} || [] });
    my $reqs = $env->emu_requests;
    my $emu = emu_direct(run_path($model), $body);

    is($r->{status}, 200, "$name: status 200")
        or diag('body: ' . show_bytes($r->{body}));
    like($r->{headers}{'content-type'} // '', qr{^application/json},
        "$name: Content-Type application/json");
    ok($r->{complete}, "$name: complete body");

    my $up = check_upstream_request($name, $reqs, $model);
    same_bytes($up, $body, "$name: upstream body is the client's, byte for byte");

    my $usd = usd6(pusd($model, $a{in}, $a{out}, $a{cached}));
    is($emu->{status}, 200, "$name: (emulator direct: 200)");
    same_bytes(norm_created($r->{body}),
        insert_cost(norm_created($emu->{body}), $usd),
        "$name: body = the emulator's envelope with cost_usd $usd last in result.usage");

    my $j = $r->{json};
    ok(ref $j eq 'HASH' && ref $j->{result} eq 'HASH'
       && ref $j->{result}{usage} eq 'HASH', "$name: JSON with result.usage")
        or return;
    ok(JSON::PP::is_bool($j->{success}) && $j->{success}, "$name: success true");
    my $u = $j->{result}{usage};
    is($u->{prompt_tokens}, $a{in}, "$name: result.usage.prompt_tokens");
    is($u->{completion_tokens}, $a{out}, "$name: result.usage.completion_tokens");
    is(sprintf('%.6f', $u->{cost_usd} // -1), $usd, "$name: result.usage.cost_usd");
    like($r->{body}, qr/"cost_usd":\d+\.\d{6}\}/,
        "$name: cost_usd is a 6-decimal JSON number closing the usage");
    is($r->{headers}{'x-cfcost-cost-usd'}, $usd, "$name: X-Cfcost-Cost-USD");
    is($r->{headers}{'x-cfcost-input-tokens'}, "$a{in}", "$name: X-Cfcost-Input-Tokens");
    is($r->{headers}{'x-cfcost-output-tokens'}, "$a{out}", "$name: X-Cfcost-Output-Tokens");
    my $rid = $r->{headers}{'x-cfcost-request-id'};
    like($rid // '', qr/^[0-9a-f]{32}$/, "$name: X-Cfcost-Request-Id");
    check_record($name, $rid, model => $model, in => $a{in}, out => $a{out},
        cached => $a{cached}, neurons => $a{neurons});
    return $r;
}

my @tie   = usage_with_residue($L8, 500000, 0);
my @under = usage_with_residue($L8, 499000, 1);
ok(pusd($L8, @tie)->copy->bmod(1000000) == 500000, '(the tie case is a tie)');

native_ok(name => 'small usage, another account in the path',
    content => 'Hello there [emu:usage 10 20]', in => 10, out => 20);
native_ok(name => "the operator's own account in the path",
    account => $CfcostTest::ACCOUNT,
    content => 'Hello there [emu:usage 10 20]', in => 10, out => 20);
native_ok(name => 'an account id like a real one',
    account => '0123456789abcdef0123456789abcdef',
    content => 'Hello [emu:usage 5 6]', in => 5, out => 6);
native_ok(name => 'percent-encoded model', path_model => $L8E,
    content => 'encoded [emu:usage 12 34]', in => 12, out => 34);
native_ok(name => 'natural usage (no directive)',
    content => 'the quick brown fox', in => 4, out => 11);
native_ok(name => 'prompt instead of messages',
    prompt => 'Complete this: once upon a time [emu:usage 40 60]', in => 40, out => 60);
native_ok(name => 'one million each',
    content => 'big [emu:usage 1000000 1000000]', in => 1000000, out => 1000000);
native_ok(name => 'the most input tokens billed (2^24)',
    content => 'huge [emu:usage 16777216 1000]', in => 16777216, out => 1000);
native_ok(name => 'zero tokens', content => 'none [emu:usage 0 0]', in => 0, out => 0);
native_ok(name => "exact half rounds up (@tie)",
    content => "tie [emu:usage @tie]", in => $tie[0], out => $tie[1]);
native_ok(name => "just under half rounds down (@under)",
    content => "under [emu:usage @under]", in => $under[0], out => $under[1]);
native_ok(name => 'gpt-oss', model => $OSS,
    content => 'oss [emu:usage 1234 567]', in => 1234, out => 567);
native_ok(name => 'kimi: cached tokens at the cached rate', model => $KIMI,
    content => 'again [emu:usage 100 20] [emu:cached 30]',
    in => 100, out => 20, cached => 30);
native_ok(name => 'kimi: reasoning tokens are part of completion_tokens',
    model => $KIMI, content => 'think [emu:usage 10 40] [emu:reasoning 25]',
    in => 10, out => 40);
native_ok(name => 'llama (no cached rate): cached tokens at the input rate',
    content => 'cache [emu:usage 100 20] [emu:cached 60]',
    in => 100, out => 20, cached => 60);
native_ok(name => 'chat-completion result', content => 'chat shape [emu:chat-completion] [emu:usage 15 25]',
    in => 15, out => 25, neurons => '1.7727272510528564');
native_ok(name => 'chat-completion result, kimi cached', model => $KIMI,
    content => 'chat shape [emu:chat-completion] [emu:usage 500 70] [emu:cached 200] [emu:neurons 3.25]',
    in => 500, out => 70, cached => 200, neurons => '3.25');
native_ok(name => 'chat-completion result, percent-encoded model',
    path_model => $L8E,
    content => 'chat shape [emu:chat-completion] [emu:usage 8 9]',
    in => 8, out => 9, neurons => '1.7727272510528564');
native_ok(name => 'chunked upstream body',
    content => 'chunky [emu:chunked] [emu:usage 7 9]', in => 7, out => 9);
native_ok(name => 'UTF-8 in the answer',
    content => "caf\x{e9} \x{2713} [emu:utf8] [emu:usage 11 13]", in => 11, out => 13);
native_ok(name => 'client cookie and headers stay here',
    content => 'private [emu:usage 1 1]', in => 1, out => 1,
    headers => [Cookie => 'session=secret', 'X-Auth-Email' => 'me@example.com']);

# a body written by hand, with Workers AI options: the bytes go up as sent
native_ok(name => 'hand-written body with options',
    body => qq'{ "messages" : [ {"role":"system","content":"Be brief."},\n'
          . qq'  {"role":"user","content":"caf\\u00e9 \\"q\\" \\/ [emu:usage 31 17]"} ],\n'
          . qq'  "max_tokens": 64, "temperature" : 0.7, "seed":42 , "stream": false }',
    in => 31, out => 17);

# no usage in the answer: passed through unchanged, flagged
{
    my $name = 'no usage in the answer';
    my $body = make_body(content => 'quiet please [emu:no-usage]');
    $env->emu_clear;
    my $r = gw('POST', run_path($L8, 'acct'), $body,
        'Content-Type' => 'application/json', auth_headers());
    my $emu = emu_direct(run_path($L8), $body);
    is($r->{status}, 200, "$name: status 200");
    same_bytes($r->{body}, $emu->{body}, "$name: body = the emulator's, unchanged");
    unlike($r->{body}, qr/cost_usd/, "$name: no cost_usd");
    is($r->{headers}{'x-cfcost-usage'}, 'estimated', "$name: X-Cfcost-Usage: estimated");
    my $rec = record_for($r->{headers}{'x-cfcost-request-id'}, $name);
    if ($rec) {
        like($rec->{flags} // '', qr/(^|,)usage_unknown(,|$)/, "$name: record flag usage_unknown");
        is($r->{headers}{'x-cfcost-cost-usd'}, usd6(Math::BigInt->new($rec->{cost_pusd})),
            "$name: X-Cfcost-Cost-USD = the record's estimate");
        is($rec->{route}, 'native', "$name: record route");
        is($rec->{status}, '200', "$name: record status");
    }
}


# --------------------------------------------------------------------------
# 2. streams: Workers AI's bytes plus one cfcost event before [DONE]

# %a: name, model, path_model, account, content | prompt | messages,
# in/out/cached (undef in: no usage reported, estimated), neurons
sub native_stream {
    my (%a) = @_;
    my $name  = $a{name};
    my $model = $a{model} // $L8;
    my $body  = make_body(%a, stream => 1);
    $env->emu_clear;
    my $r = gw('POST', run_path($a{path_model} // $model, $a{account} // 'client-account-2'),
        $body, 'Content-Type' => 'application/json', auth_headers());
    my $reqs = $env->emu_requests;
    my $up = check_upstream_request($name, $reqs, $model);
    same_bytes($up, $body, "$name: upstream body is the client's, byte for byte");
    my $emu = emu_direct(run_path($model), $body);

    my $rid = stream_head($name, $r);
    is($emu->{status}, 200, "$name: (emulator direct: 200)");
    ok($emu->{complete}, "$name: (emulator direct: complete)");

    my $ebody = norm_created($emu->{body});
    my $gbody = norm_created($r->{body});
    my %e = (model => $model, request_id => $rid // '');
    if (defined $a{in}) {
        %e = (%e, in => $a{in}, out => $a{out}, cached => $a{cached}, estimated => 0);
    } else {
        my $pb = 0;
        $pb += utf8_len($a{prompt}) if defined $a{prompt};
        $pb += utf8_len($_->{content})
            for @{ $a{messages} // (defined $a{prompt} ? [] : [{ content => $a{content} }]) };
        %e = (%e, in => ceil4($pb), out => ceil4(text_bytes($ebody)), estimated => 1);
    }
    my $d = done_offset($ebody);
    ok($d >= 0, "$name: (the emulator's stream has [DONE])");
    my $ev = cost_event_text(%e);
    same_bytes($gbody, substr($ebody, 0, $d) . $ev . substr($ebody, $d),
        "$name: stream = the emulator's with the cfcost event before [DONE]");

    my @found = $gbody =~ /($COST_RE)/g;
    is(scalar @found, 1, "$name: one cfcost event");
    my @evs = sse_events($gbody);
    like($evs[-1] // '', qr/^data: \[DONE\]\r?\n\r?\n\z/, "$name: [DONE] is last");
    is($evs[-2] // '', $found[0] // '-', "$name: the cfcost event is next to last");
    my $j = eval { JSON::PP->new->utf8->decode(event_data($found[0] // '') // '') };
    my $cf = ref $j eq 'HASH' && ref $j->{cfcost} eq 'HASH' ? $j->{cfcost} : {};
    is($cf->{request_id}, $rid, "$name: event request_id = header");
    is(sprintf('%.6f', $cf->{cost_usd} // -1),
        usd6(pusd($model, $e{in}, $e{out}, $e{cached})), "$name: event cost_usd");

    check_record($name, $rid, model => $model, in => $e{in}, out => $e{out},
        cached => $e{cached}, neurons => $a{neurons},
        flags => $e{estimated} ? 'streamed,estimated,usage_unknown' : 'streamed');
    return $r;
}

for my $v (['', 'plain'],
           ['[emu:split 1]', 'split 1'],
           ['[emu:split 5]', 'split 5'],
           ['[emu:split 5] [emu:utf8]', 'split 5 + utf8'],
           ['[emu:split 1] [emu:utf8]', 'split 1 + utf8'],
           ['[emu:split 1] [emu:trickle 1]', 'split 1 trickled'],
           ['[emu:crlf]', 'crlf'],
           ['[emu:split 5] [emu:crlf] [emu:utf8]', 'split 5 + crlf + utf8'])
{
    my ($dirs, $vname) = @$v;
    native_stream(name => "stream, $vname",
        content => "tell me a story $dirs [emu:usage 100 200]", in => 100, out => 200);
}
native_stream(name => 'stream, percent-encoded model', path_model => $L8E,
    content => 'encoded stream [emu:split 5] [emu:usage 3 4]', in => 3, out => 4);
native_stream(name => 'stream, prompt', prompt => 'Once upon a time [emu:usage 30 40]',
    in => 30, out => 40);
native_stream(name => 'stream, kimi cached', model => $KIMI,
    content => 'again [emu:usage 100 20] [emu:cached 30] [emu:split 5]',
    in => 100, out => 20, cached => 30);
native_stream(name => 'stream, kimi reasoning', model => $KIMI,
    content => 'think [emu:usage 10 40] [emu:reasoning 25] [emu:split 1]',
    in => 10, out => 40);
native_stream(name => 'stream, chat-completion chunks (incremental usages)',
    content => 'count these words [emu:chat-completion] [emu:usage 40 9]',
    in => 40, out => 9, neurons => '1.7727272510528564');
native_stream(name => 'stream, chat-completion chunks, split 1',
    content => 'count these words [emu:chat-completion] [emu:usage 40 9] [emu:split 1]',
    in => 40, out => 9, neurons => '1.7727272510528564');
native_stream(name => 'stream, chat-completion chunks, kimi cached, split 5', model => $KIMI,
    content => 'more words here [emu:chat-completion] [emu:usage 50 8] [emu:cached 20] [emu:split 5]',
    in => 50, out => 8, cached => 20, neurons => '1.7727272510528564');
native_stream(name => 'stream, no usage: estimated',
    content => 'estimate this answer please [emu:no-usage]');
native_stream(name => 'stream, no usage, split 5 + utf8: estimated',
    content => "estimate \x{2713} too [emu:no-usage] [emu:split 5] [emu:utf8]");


# --------------------------------------------------------------------------
# 3. errors made by cfcost: Cloudflare's error envelope, plus "detail"

sub native_error {
    my (%a) = @_;
    my $name = $a{name};
    my $before = $env->record_count;
    $env->emu_clear;
    my $r = gw($a{method} // 'POST', $a{path} // run_path($L8, 'client-account-3'),
        $a{body}, (defined $a{body} ? ('Content-Type' => 'application/json') : ()),
        ($a{auth} // 1 ? auth_headers() : ()), @{ $a{headers} || [] });
    is($r->{status}, $a{status}, "$name: status $a{status}")
        or diag('body: ' . show_bytes($r->{body}));
    like($r->{headers}{'content-type'} // '', qr{^application/json},
        "$name: Content-Type application/json");
    my $j = $r->{json};
    ok(ref $j eq 'HASH', "$name: a JSON object") or diag('body: ' . show_bytes($r->{body}));
    $j = {} unless ref $j eq 'HASH';
    is_deeply([sort keys %$j], [qw(detail errors messages result success)],
        "$name: members result, success, errors, messages, detail");
    ok(exists $j->{result} && !defined $j->{result}, "$name: result null");
    ok(JSON::PP::is_bool($j->{success}) && !$j->{success}, "$name: success false");
    is_deeply($j->{messages}, [], "$name: messages []");
    my $errs = ref $j->{errors} eq 'ARRAY' ? $j->{errors} : [];
    is(scalar @$errs, 1, "$name: one error");
    my $e = ref $errs->[0] eq 'HASH' ? $errs->[0] : {};
    is_deeply([sort keys %$e], [qw(code message)], "$name: the error has code and message");
    if (defined $a{code}) {
        is($e->{code}, $a{code}, "$name: code $a{code}");
    } else {
        like($e->{code} // '', qr/^\d+$/, "$name: an integer code");
    }
    like($r->{body}, qr/"code":\d+,/, "$name: code is a JSON number");
    ok(defined $e->{message} && !ref $e->{message} && length $e->{message},
        "$name: message is a string");
    is($j->{detail}, $e->{message}, "$name: detail = the error's message");
    like($e->{message} // '', $a{message}, "$name: message") if $a{message};
    if (defined $a{exact}) {
        (my $b = $r->{body}) =~ s/\s+\z//;
        is($b, $a{exact}, "$name: exactly the documented body");
    }
    like($r->{headers}{'x-cfcost-request-id'} // '', qr/^[0-9a-f]{32}$/,
        "$name: X-Cfcost-Request-Id") unless $a{no_request_id};

    my $reqs = $env->emu_requests;
    is(scalar @$reqs, 0, "$name: nothing went upstream")
        or diag(CfcostTest::_show($reqs));

    if ($a{record}) {
        check_record($name, $r->{headers}{'x-cfcost-request-id'},
            model => $a{model} // '', status => $a{status}, upstream_status => 0,
            model_asked => $a{model_asked},
            flags => undef, error => $a{error} // 'invalid_request');
    } else {
        no_new_records_since($before, $name);
    }
    return $r;
}

my $good = make_body(content => 'hi [emu:usage 1 1]');
my $BAD_KEY = 'cfk_00000000000000000000000000000000';

native_error(name => 'no key', auth => 0, body => $good,
    status => 401, code => 10000, message => qr/API key/);
native_error(name => 'unknown key', auth => 0, body => $good,
    headers => [Authorization => "Bearer $BAD_KEY"],
    status => 401, code => 10000,
    exact => '{"result":null,"success":false,"errors":[{"code":10000,'
           . '"message":"invalid API key"}],"messages":[],"detail":"invalid API key"}');
native_error(name => 'the operator token is no key', auth => 0, body => $good,
    headers => [Authorization => "Bearer $CfcostTest::TOKEN"],
    status => 401, code => 10000, message => qr/invalid API key/);
native_error(name => 'not a Bearer token', auth => 0, body => $good,
    headers => [Authorization => "Basic $k->{key}"],
    status => 401, code => 10000);
# (the model named in the path may or may not be in the record of a body
# that could not be read); an unpriced one is "(unpriced)", the name the
# client gave only in model_asked
my $L8_OR_NONE = qr/^(\Q$L8\E)?$/;
native_error(name => 'body not JSON', body => '{"messages": [ }',
    status => 400, code => 5006, message => qr/JSON/, record => 1,
    model => $L8_OR_NONE);
native_error(name => 'empty body', body => '',
    status => 400, code => 5006, record => 1, model => $L8_OR_NONE);
native_error(name => 'body a JSON array', body => '[{"role":"user"}]',
    status => 400, code => 5006, record => 1, model => $L8_OR_NONE);
native_error(name => 'model not priced', body => $good,
    path => run_path('@cf/nobody/unpriced-model', 'acc'),
    status => 400, code => 5006, message => qr{\@cf/nobody/unpriced-model},
    record => 1, model => '(unpriced)',
    model_asked => '@cf/nobody/unpriced-model');
native_error(name => 'model not priced (percent-encoded)', body => $good,
    path => run_path('%40cf%2Fnobody%2Funpriced-model', 'acc'),
    status => 400, code => 5006, message => qr{\@cf/nobody/unpriced-model},
    record => 1, model => '(unpriced)',
    model_asked => '@cf/nobody/unpriced-model');
native_error(name => 'model name without @cf/', body => $good,
    path => run_path('llama-3.1-8b-instruct', 'acc'),
    status => 400, code => 5006, message => qr{llama-3\.1-8b-instruct},
    record => 1, model => '(unpriced)',
    model_asked => 'llama-3.1-8b-instruct');
native_error(name => 'a priced model with a suffix', body => $good,
    path => run_path("$L8/extra", 'acc'),
    status => 400, code => 5006, record => 1, model => '(unpriced)',
    model_asked => "$L8/extra");
native_error(name => 'messages not an array',
    body => $JS->encode({ messages => 'hi' }),
    status => 400, code => 5006, message => qr/messages/, record => 1, model => $L8);
native_error(name => 'messages empty',
    body => $JS->encode({ messages => [] }),
    status => 400, code => 5006, message => qr/messages/, record => 1, model => $L8);
native_error(name => 'a message without role',
    body => $JS->encode({ messages => [{ content => 'hi' }] }),
    status => 400, code => 5006, message => qr/messages/, record => 1, model => $L8);
native_error(name => 'GET on the native route', method => 'GET', auth => 0,
    status => 405);
native_error(name => 'body over client_max_body_size',
    body => '{"prompt":"' . ('x' x (1024 * 1024 + 10)) . '"}',
    status => 413, no_request_id => 1);


# --------------------------------------------------------------------------
# 4. Workers AI's errors pass through unchanged

sub upstream_error {
    my (%a) = @_;
    my $name = $a{name};
    my $model = $a{model} // $L8;
    my $body = $a{body} // make_body(content => "oops $a{directive}", stream => $a{stream});
    $env->emu_clear;
    my $r = gw('POST', run_path($model, 'client-account-4'), $body,
        'Content-Type' => 'application/json', auth_headers());
    my $reqs = $env->emu_requests;
    my $up = check_upstream_request($name, $reqs, $model);
    same_bytes($up, $body, "$name: upstream body is the client's, byte for byte");
    my $emu = emu_direct(run_path($model), $body);
    my $rec = check_upstream_error($name, $r, $emu, %a, model => $model,
        own_error => sub {
            my ($r) = @_;
            my $j = $r->{json};
            ok(ref $j eq 'HASH' && exists $j->{result} && !defined $j->{result}
               && JSON::PP::is_bool($j->{success}) && !$j->{success}
               && ref $j->{errors} eq 'ARRAY' && ref $j->{errors}[0] eq 'HASH'
               && ($j->{errors}[0]{code} // '') =~ /^\d+$/
               && defined $j->{errors}[0]{message}
               && ref $j->{messages} eq 'ARRAY' && defined $j->{detail},
               "$name: a Cloudflare error envelope with detail")
                or diag('body: ' . show_bytes($r->{body}));
        });
    is($rec->{key_id}, $k->{id}, "$name: record key_id") if $rec;
}

upstream_error(name => 'upstream 5007 (400)', directive => '[emu:error 5007 400]',
    status => 400, upstream_status => 400, passthrough => 1, error => qr/^cf:5007$/);
upstream_error(name => 'upstream 5004 (default status)', directive => '[emu:error 5004]',
    status => 400, upstream_status => 400, passthrough => 1, error => qr/^cf:5004$/);
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
# neither messages nor prompt: another task's input, for Workers AI to judge
upstream_error(name => 'a body Workers AI refuses (5006)', model => $BGE,
    body => '{"text":["embed me"]}',
    status => 400, upstream_status => 400, passthrough => 1, error => qr/^cf:5006$/);
upstream_error(name => 'non-JSON 503', directive => '[emu:status 503]',
    status => 503, upstream_status => 503, error => qr/\S/);
upstream_error(name => 'HTML 200', directive => '[emu:html200]',
    status => 502, upstream_status => 200, error => qr/\S/);
{
    my $name = 'connection closed without a response';
    my $body = make_body(content => 'oops [emu:close]');
    $env->emu_clear;
    my $r = gw('POST', run_path($L8, 'acc'), $body,
        'Content-Type' => 'application/json', auth_headers());
    check_upstream_request($name, $env->emu_requests, $L8);
    is($r->{status}, 502, "$name: status 502");
    my $j = $r->{json};
    ok(ref $j eq 'HASH' && exists $j->{result} && !defined $j->{result}
       && ref $j->{errors} eq 'ARRAY' && defined $j->{detail},
       "$name: a Cloudflare error envelope with detail")
        or diag('body: ' . show_bytes($r->{body}));
    my $rec = record_for($r->{headers}{'x-cfcost-request-id'}, $name);
    if ($rec) {
        is($rec->{route}, 'native', "$name: record route");
        is($rec->{status}, '502', "$name: record status");
        is($rec->{upstream_status}, '0', "$name: record upstream_status");
    }
}


# --------------------------------------------------------------------------
# 5. record ids are unique, every record of this file is route "native"

check_all_records();

$env->done;
done_testing;
