# What Workers AI (the emulator) receives: the account's run path, the
# operator's token, none of the client's credentials or headers, the
# client's body without "model", an identity encoding.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CfcostTest;

my $env = CfcostTest->start;
my $k = $env->create_key(user => 'up');

my $model = '@cf/meta/llama-3.1-8b-instruct';
my $path  = '/client/v4/accounts/test-account/ai/run/@cf/meta/llama-3.1-8b-instruct';

my %common_headers = (
    authorization      => 'Bearer test-upstream-token',
    'x-api-key'        => undef,
    cookie             => undef,
    'x-custom'         => undef,
    'content-type'     => qr{^application/json\b},
    'accept-encoding'  => sub { !defined $_[0] || $_[0] !~ /gzip|br|deflate/i },
    'content-length'   => qr/^\d+$/,
);

sub without_model {
    my %b = %{ $_[0] };
    delete $b{model};
    return \%b;
}

my $full = {
    model       => $model,
    messages    => [
        { role => 'system', content => 'You are terse.' },
        { role => 'user',   content => 'Say hi [emu:usage 5 6]' },
    ],
    max_tokens  => 64,
    temperature => 0.5,
    top_p       => 0.9,
    seed        => 42,
    stream      => JSON::PP::false,
};

my $prompt_body = { model => $model, prompt => 'Once upon a time [emu:usage 2 2]' };

my $utf8_body = {
    model    => $model,
    messages => [{ role => 'user', content => "caf\x{e9} \x{2713} \x{65e5}\x{672c} [emu:usage 1 1]" }],
};

my $json = CfcostTest::json();

my @cases = (
    {
        name => 'X-API-Key, cookie and custom headers are not forwarded',
        chat => { key => $k->{key}, body => $full,
                  headers => { Cookie => 'session=secret', 'X-Custom' => 'foo',
                               'Accept-Encoding' => 'gzip' } },
        status   => 200,
        upstream => { path => $path, headers => \%common_headers,
                      body => without_model($full) },
    },
    {
        name => 'client Authorization is replaced by the operator token',
        chat => { key => $k->{key}, auth => 'bearer', body => $full },
        status   => 200,
        upstream => { path => $path, headers => \%common_headers,
                      body => without_model($full) },
    },
    {
        name => 'prompt body',
        chat => { key => $k->{key}, body => $prompt_body },
        status   => 200,
        upstream => { path => $path, headers => \%common_headers,
                      body => without_model($prompt_body) },
    },
    {
        name => 'non-ASCII content survives',
        chat => { key => $k->{key}, body => $utf8_body },
        status   => 200,
        upstream => { path => $path, headers => \%common_headers,
                      body => without_model($utf8_body) },
    },
    {
        name => 'another model, another path',
        chat => { key => $k->{key}, model => '@cf/openai/gpt-oss-120b',
                  content => 'x [emu:usage 1 1]' },
        status   => 200,
        upstream => { path => '/client/v4/accounts/test-account/ai/run/@cf/openai/gpt-oss-120b',
                      headers => \%common_headers },
    },
    {
        name => 'chunked client body',
        http => [POST => '/api/ai/chat',
                 headers => { 'X-API-Key' => $k->{key},
                              'Content-Type' => 'application/json' },
                 body => do {
                     my @parts = ($json->encode($full) =~ /(.{1,20})/gs);
                     sub { shift @parts };
                 }],
        status   => 200,
        upstream => { path => $path, headers => \%common_headers,
                      body => without_model($full) },
    },
);

# hand-written bodies: "model" is cut from the client's bytes wherever it
# stands, also when its key is written with an escape ("\u006dodel" is
# "model" to every JSON parser); the rest goes up as it was
my $msg = '"messages":[{"role":"user","content":"cut [emu:usage 1 2]"}]';
for my $c (['model first',        qq'{"model":"$model",$msg,"seed":1}',   qq'{$msg,"seed":1}'],
           ['model last',         qq'{$msg,"seed":1,"model":"$model"}',   qq'{$msg,"seed":1}'],
           ['model in the middle', qq'{$msg, "model" : "$model" ,"seed":1}', qq'{$msg, "seed":1}'],
           ['model key escaped',  qq'{"\\u006dodel":"$model",$msg}',     qq'{$msg}'],
           ['model value escaped', qq'{$msg,"model":"\\u0040cf/meta/llama-3.1-8b-instruct"}', qq'{$msg}'],
           ['white space around', qq' \n{ "model":"$model" , $msg }\n',  qq' \n{  $msg }\n'])
{
    my ($name, $sent, $want) = @$c;
    push @cases, {
        name => "hand-written body, $name",
        http => [POST => '/api/ai/chat',
                 headers => { 'X-API-Key' => $k->{key},
                              'Content-Type' => 'application/json' },
                 body => $sent],
        status   => 200,
        upstream => { path => $path, headers => \%common_headers,
                      raw_body => $want },
    };
}

$env->run_case($_) for @cases;

# the key never appears anywhere in what went upstream
$env->emu_clear;
my $r = $env->chat(key => $k->{key}, body => $full,
    headers => { Cookie => "k=$k->{key}" });
is($r->{status}, 200, 'request for the key leak check');
my $reqs = $env->emu_requests;
is(scalar @$reqs, 1, 'one upstream request');
my $dump = $json->encode($reqs);
unlike($dump, qr/\Q$k->{key}\E/, 'the client key is nowhere in the upstream request');
unlike($dump, qr/\Q$k->{id}\E/, 'nor the key id');

# the Host header names the upstream, not the gateway
like($reqs->[0]{headers}{host} // '', qr/^127\.0\.0\.1(:\d+)?$/, 'upstream Host');

$env->done;
done_testing;
