# Request checks before anything goes upstream: size, JSON, shape, model.
# Each check answers JSON {"detail"}, sends nothing upstream, and (the key
# being valid) leaves exactly one record with the status sent.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use CfcostTest;

my $env = CfcostTest->start;
my $k = $env->create_key(user => 'checker');

my $model = '@cf/meta/llama-3.1-8b-instruct';
my $msgs  = [{ role => 'user', content => 'hi [emu:usage 1 1]' }];

sub raw {
    my ($body, %h) = @_;
    return [POST => '/api/ai/chat',
        headers => { 'X-API-Key' => $k->{key},
                     'Content-Type' => 'application/json', %h },
        body => $body];
}

# a syntactically valid chat body just over 1 MiB
my $big = CfcostTest::json()->encode({
    model => $model,
    messages => [{ role => 'user', content => 'x' x (1024 * 1024 + 10) }],
});

# the same, sent chunked: no Content-Length to refuse it up front
sub chunked_big {
    my @parts = unpack("(a65536)*", $big);
    return sub { shift @parts };
}

my @cases = (
    # nginx refuses this one from its Content-Length alone, before the key
    # is looked at: like a request without a key, it leaves no record.
    { name => 'body over 1m',        http => raw($big),        status => 413,
      record => 'none' },
    { name => 'chunked body over 1m', http => raw(chunked_big()), status => 413 },
    { name => 'invalid JSON',        http => raw('{"model":'), status => 400 },
    { name => 'not JSON at all',     http => raw('hello'),     status => 400 },
    { name => 'empty body',          http => raw(''),          status => 400 },
    { name => 'JSON array',          http => raw('[1,2,3]'),   status => 400 },
    { name => 'JSON string',         http => raw('"hi"'),      status => 400 },
    { name => 'JSON number',         http => raw('42'),        status => 400 },
    { name => 'JSON null',           http => raw('null'),      status => 400 },
    { name => 'trailing garbage',
      http => raw('{"model":"' . $model . '","prompt":"hi"} x'), status => 400 },
    # a member cfcost reads, given twice: the gateway and the upstream
    # could each read another one (the price of one model, the answer of
    # another), so neither is chosen
    { name => 'model twice',
      http => raw(qq'{"model":"$model","messages":[{"role":"user","content":"hi"}],"model":"\@cf/openai/gpt-oss-120b"}'),
      status => 400, detail => qr/"model" is given twice/ },
    { name => 'model twice, once escaped',
      http => raw(qq'{"model":"$model","\\u006dodel":"x","prompt":"hi"}'),
      status => 400, detail => qr/"model" is given twice/ },
    { name => 'stream twice',
      http => raw(qq'{"model":"$model","prompt":"hi","stream":false,"stream":true}'),
      status => 400, detail => qr/"stream" is given twice/ },
    { name => 'a message with content twice',
      http => raw(qq'{"model":"$model","messages":[{"role":"user","content":"a","content":"b"}]}'),
      status => 400, detail => qr/"content" is given twice/ },
    { name => 'invalid UTF-8 in a string',
      http => raw(qq'{"model":"$model","prompt":"\xff"}'), status => 400,
      detail => qr/not valid JSON/ },
    { name => 'a lone surrogate escape',
      http => raw(qq'{"model":"$model","prompt":"\\ud800"}'), status => 400,
      detail => qr/not valid JSON/ },
    { name => 'messages[1] without content',
      chat => { key => $k->{key},
                body => { model => $model, messages => [@$msgs, { role => 'user' }] } },
      status => 400, detail => qr/messages\[1\]/ },
    { name => 'messages[0] a string',
      chat => { key => $k->{key}, body => { model => $model, messages => ['hi'] } },
      status => 400, detail => qr/messages\[0\]/ },
    { name => 'messages[0] role a number',
      chat => { key => $k->{key},
                body => { model => $model, messages => [{ role => 1, content => 'x' }] } },
      status => 400, detail => qr/messages\[0\]/ },
    { name => 'empty messages',
      chat => { key => $k->{key}, body => { model => $model, messages => [] } },
      status => 400, detail => qr/non-empty array/ },
    { name => 'no messages nor prompt',
      chat => { key => $k->{key}, body => { model => $model } }, status => 400 },
    { name => 'messages not an array',
      chat => { key => $k->{key}, body => { model => $model, messages => 'hi' } },
      status => 400 },
    { name => 'messages an object',
      chat => { key => $k->{key},
                body => { model => $model, messages => { role => 'user' } } },
      status => 400 },
    { name => 'prompt a number',
      chat => { key => $k->{key}, body => { model => $model, prompt => 5 } },
      status => 400 },
    { name => 'missing model',
      chat => { key => $k->{key}, body => { messages => $msgs } },
      status => 400, detail => qr/model/i },
    { name => 'model not a string',
      chat => { key => $k->{key}, body => { model => 7, messages => $msgs } },
      status => 400, detail => qr/model/i },
    { name => 'empty model',
      chat => { key => $k->{key}, body => { model => '', messages => $msgs } },
      status => 400 },
    { name => 'unpriced model',
      chat => { key => $k->{key}, body => { model => '@cf/nope/x', messages => $msgs } },
      status => 400, detail => qr{\@cf/nope/x},
      record => { status => '400', user => 'checker', key_id => $k->{id},
                  upstream_status => '0', cost_pusd => '0',
                  model => '(unpriced)', model_asked => '@cf/nope/x' } },
    { name => 'unpriced model, 300 bytes: 128 kept',
      chat => { key => $k->{key}, body => { model => 'm' x 300, messages => $msgs } },
      status => 400,
      record => { status => '400', model => '(unpriced)',
                  model_asked => 'm' x 128 } },
    { name => 'model that only differs in case',
      chat => { key => $k->{key},
                body => { model => '@CF/META/LLAMA-3.1-8B-INSTRUCT', messages => $msgs } },
      status => 400, detail => qr{\@CF/META/LLAMA-3\.1-8B-INSTRUCT},
      record => { status => '400', model => '(unpriced)',
                  model_asked => '@CF/META/LLAMA-3.1-8B-INSTRUCT' } },
);

for my $c (@cases) {
    $c->{upstream} = 'none';
    $c->{record} //= {
        status  => "$c->{status}",
        user    => 'checker',
        key_id  => $k->{id},
        upstream_status => '0',
        cost_pusd => '0',
    };
    $env->run_case($c);
}

# the same key still works after all the rejections, and goes upstream
$env->run_case({
    name     => 'valid request after the rejections',
    chat     => { key => $k->{key}, body => { model => $model, messages => $msgs } },
    status   => 200,
    upstream => { count => 1 },
    record   => { status => '200' },
});

# and a prompt-only body is a valid request
$env->run_case({
    name     => 'prompt instead of messages',
    chat     => { key => $k->{key},
                  body => { model => $model, prompt => 'hi [emu:usage 2 3]' } },
    status   => 200,
    json     => { input_tokens => 2, output_tokens => 3 },
    upstream => { count => 1 },
    record   => { status => '200', input_tokens => '2', output_tokens => '3' },
});

# a model name that is not UTF-8 (the native route's path is percent-
# decoded) is echoed in the error with U+FFFD: the body stays valid JSON
{
    my ($res) = $env->run_case({
        name   => 'native route, model name not UTF-8',
        http   => ['POST', '/client/v4/accounts/x/ai/run/@cf/x%FFy%C0%AF',
                   headers => { Authorization => "Bearer $k->{key}" },
                   body => { prompt => 'hi' }],
        status => 400,
        record => { status => '400', cost_pusd => '0' },
    });
    unlike($res->{body}, qr/[\xff\xc0]/, 'native, not UTF-8: no raw invalid bytes');
    like($res->{body}, qr/\@cf\/x\xef\xbf\xbdy\xef\xbf\xbd\xef\xbf\xbd/,
        'native, not UTF-8: each invalid byte as U+FFFD');
    ok(eval { JSON::PP->new->utf8->decode($res->{body}); 1 },
        'native, not UTF-8: the error body is valid JSON') or diag($@);
}

# nginx logs the oversized body itself
$env->allow_error(qr/client intended to send too large (chunked )?body/);
$env->done;
done_testing;
