# Every request that reached Workers AI is billed: when no usable usage
# comes back -- the client leaves while the upstream works (499), the
# upstream is slower than proxy_read_timeout (504), the answer is larger
# than cfcost_response_buffer, the answer breaks off half-way (502), or
# the usage it reports is absurd -- the one record carries an estimate,
# flagged "estimated" (and "usage_unknown"), with the reason in "error",
# and cost_pusd = tokens x price.  The estimate (README, "The estimator"):
# input = ceil(prompt bytes / 4); output = ceil(generated text bytes seen /
# 4) when some of the answer came, else the request's max_tokens, else 0.
# A request refused before it was proxied is not billed.
#
# The shipped configuration waits 120 s for Workers AI: this file renders
# it with proxy_read_timeout 1s and cfcost_response_buffer 4k.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(time sleep);
use CfcostTest;
use CfcostWire qw($L8 pusd usd6 ceil4 utf8_len wire_init emu_direct run_path);

my $env = CfcostTest->start(nginx => 0, workers => 1);
my $t = $env->tmp;

my $conf = $env->conf_text;
$conf =~ s{proxy_read_timeout 120s;}{proxy_read_timeout 1s;
        cfcost_response_buffer 4k;}
    or BAIL_OUT('no proxy_read_timeout 120s in the shipped config');
open my $fh, '>', "$t/nginx.conf" or die $!;
print $fh $conf;
close $fh;
$env->start_nginx;

my $k = $env->create_key(user => 'billed');
wire_init(env => $env, key => $k);

my $JS = JSON::PP->new->utf8->canonical;
my $OAI_PATH = "/client/v4/accounts/$CfcostTest::ACCOUNT/ai/v1/chat/completions";

$env->allow_error(qr/upstream timed out/);
$env->allow_error(qr/upstream prematurely closed connection/);
$env->allow_error(qr/client prematurely closed connection/);
$env->allow_error(qr/reported a token count out of range/);

my $FLAGS = qr/^usage_unknown,estimated$/;

# the record fields of an estimate of $in / $out tokens on llama-3.1-8b
sub estimate {
    my ($in, $out, %r) = @_;
    return {
        user            => 'billed',
        key_id          => $k->{id},
        model           => $L8,
        flags           => $FLAGS,
        input_tokens    => "$in",
        output_tokens   => "$out",
        cached_tokens   => '0',
        cost_pusd       => pusd($L8, $in, $out)->bstr,
        price_input     => '282000',
        price_output    => '827000',
        %r,
    };
}

# generated text bytes ("x"s) in what the emulator sends for this body
# straight to us: under [emu:die-after], the first half of its answer
sub half_text {
    my ($path, $body) = @_;
    my $r = emu_direct($path, $JS->encode($body));
    die "emulator direct: $r->{status}" unless $r->{status} == 200;
    return ($r->{body} =~ tr/x//);
}


# --------------------------------------------------------------------------
# 499: the client leaves while Workers AI works on the request

for my $cap (undef, 64) {
    my $content = 'wait for me, please [emu:delay 3000]';
    my $name = '499, client gone before the answer'
        . (defined $cap ? ", max_tokens $cap" : ', no max_tokens');
    my $in = ceil4(utf8_len($content));
    my ($res, $rec) = $env->run_case({
        name    => $name,
        chat    => { key => $k->{key}, content => $content, timeout => 0.4,
                     (defined $cap ? (extra => { max_tokens => $cap }) : ()) },
        record  => estimate($in, $cap // 0, status => '499',
                            upstream_status => '0', error => 'client_closed'),
    });
    isnt($res->{status}, 200, "$name: the client gave up ($res->{status})");
    ok($rec && $rec->{cost_pusd} > 0, "$name: never a silent \$0");
}

# the emulator is still sleeping on those two: let it finish
sleep 3;


# --------------------------------------------------------------------------
# 504: Workers AI slower than proxy_read_timeout (1 s here)

for my $cap (undef, 100) {
    my $content = 'slow one [emu:delay 2500]';
    my $name = '504, upstream timed out'
        . (defined $cap ? ", max_tokens $cap" : ', no max_tokens');
    my $in = ceil4(utf8_len($content));
    my (undef, $rec) = $env->run_case({
        name    => $name,
        chat    => { key => $k->{key}, content => $content, timeout => 10,
                     (defined $cap ? (extra => { max_tokens => $cap }) : ()) },
        status  => 504,
        detail  => qr/did not answer in time/,
        record  => estimate($in, $cap // 0, status => '504',
                            upstream_status => '0', error => 'upstream_timeout'),
    });
    ok($rec && $rec->{cost_pusd} > 0, "$name: never a silent \$0");
}

# the OpenAI route and its max_completion_tokens
{
    my $content = 'slow openai [emu:delay 2500]';
    my $in = ceil4(utf8_len($content));
    $env->run_case({
        name    => '504 on the OpenAI route, max_completion_tokens 7',
        http    => ['POST', '/v1/chat/completions',
                    headers => { Authorization => "Bearer $k->{key}" },
                    body => { model => $L8, max_completion_tokens => 7,
                              messages => [{ role => 'user', content => $content }] },
                    timeout => 10],
        status  => 504,
        record  => estimate($in, 7, status => '504', upstream_status => '0',
                            error => 'upstream_timeout', route => 'openai'),
    });
}
sleep 1.6;


# --------------------------------------------------------------------------
# an answer over cfcost_response_buffer (4k here): all its text is counted

for my $size (5000, 100000) {
    my $content = "big answer [emu:big $size]";
    my $in = ceil4(utf8_len($content));
    my (undef, $rec) = $env->run_case({
        name    => "answer of $size bytes over a 4k buffer",
        chat    => { key => $k->{key}, content => $content,
                     extra => { max_tokens => 1 } },   # text seen wins
        status  => 502,
        detail  => qr/cfcost_response_buffer/,
        record  => estimate($in, ceil4($size), status => '502',
                            upstream_status => '200',
                            error => 'response_too_large'),
    });
}


# --------------------------------------------------------------------------
# 502 after a partial answer: Content-Length promised, half of it sent

{
    my $content = 'cut me [emu:die-after 1] [emu:big 2000]';
    my $seen = half_text(run_path($L8),
        { messages => [{ role => 'user', content => $content }] });
    ok($seen > 100, "partial native answer: (the half holds $seen bytes of text)");
    my $in = ceil4(utf8_len($content));
    $env->run_case({
        name    => '502 after half a native answer',
        chat    => { key => $k->{key}, content => $content },
        status  => 502,
        record  => estimate($in, ceil4($seen), status => '502',
                            upstream_status => '200',
                            error => 'upstream_incomplete'),
    });
}

{
    my $content = 'cut me too [emu:die-after 1] [emu:big 2000] [emu:chunked]';
    my $body = { model => $L8,
                 messages => [{ role => 'user', content => $content }] };
    my $seen = half_text($OAI_PATH, $body);
    ok($seen > 100, "partial OpenAI answer: (the half holds $seen bytes of text)");
    my $in = ceil4(utf8_len($content));
    $env->run_case({
        name    => '502 after half an OpenAI answer (chunked)',
        http    => ['POST', '/v1/chat/completions',
                    headers => { Authorization => "Bearer $k->{key}" },
                    body => $body],
        status  => 502,
        record  => estimate($in, ceil4($seen), status => '502',
                            upstream_status => '200',
                            error => 'upstream_incomplete', route => 'openai'),
    });
}


# --------------------------------------------------------------------------
# absurd token counts (over 2^24): the answer still goes out, with the
# estimate the record carries, flagged, and the reason

my $G = 'Hello from the cfcost emulator. You said:';

for my $c (['9223372036854775808 5', '2^63 input tokens'],
           ['5 18446744073709551616', '2^64 output tokens'],
           ['4294967296 1', '2^32 input tokens'],
           ['999999999999999 1', '999999999999999 input tokens'],
           ['1 16777217', '2^24 + 1 output tokens'],
           ['99999999999999999999999999 1', '10^26 input tokens'])
{
    my ($usage, $what) = @$c;
    my $content = "count this [emu:usage $usage]";
    my $in = ceil4(utf8_len($content));
    my $out = ceil4(utf8_len("$G count this"));
    $env->run_case({
        name    => "chat, $what",
        chat    => { key => $k->{key}, content => $content },
        status  => 200,
        json    => { response => "$G count this", input_tokens => $in,
                     output_tokens => $out,
                     cost_usd => sub { sprintf('%.6f', $_[0] // -1)
                                       eq usd6(pusd($L8, $in, $out)) },
                     estimated => sub { $_[0] && JSON::PP::is_bool($_[0]) } },
        headers => { 'x-cfcost-usage' => 'estimated',
                     'x-cfcost-cost-usd' => usd6(pusd($L8, $in, $out)) },
        record  => estimate($in, $out, status => '200',
                            upstream_status => '200',
                            error => 'usage_out_of_range'),
    });
}

{
    my $content = 'openai absurd [emu:usage 18446744073709551617 3]';
    my $in = ceil4(utf8_len($content));
    my $out = ceil4(utf8_len("$G openai absurd"));
    my ($res) = $env->run_case({
        name    => 'OpenAI route, 2^64+1 input tokens',
        http    => ['POST', '/v1/chat/completions',
                    headers => { Authorization => "Bearer $k->{key}" },
                    body => { model => $L8,
                              messages => [{ role => 'user', content => $content }] }],
        status  => 200,
        record  => estimate($in, $out, status => '200', upstream_status => '200',
                            error => 'usage_out_of_range', route => 'openai'),
    });
    is(ref $res->{json} eq 'HASH' && $res->{json}{choices}[0]{message}{content},
        "$G openai absurd", 'OpenAI route, absurd usage: the answer as sent');
}

# a stream whose usage event is absurd: estimated, with the reason
{
    my $content = 'stream absurd [emu:usage 9223372036854775807 2]';
    my $in = ceil4(utf8_len($content));
    my $out = ceil4(utf8_len("$G stream absurd"));
    my ($res, $rec) = $env->run_case({
        name    => 'stream, 2^63-1 input tokens',
        chat    => { key => $k->{key}, content => $content,
                     extra => { stream => JSON::PP::true } },
        status  => 200,
        record  => estimate($in, $out, status => '200', upstream_status => '200',
                            error => 'usage_out_of_range',
                            flags => qr/^usage_unknown,streamed,estimated$/),
    });
    like($res->{body}, qr/"cfcost":\{[^\n]*"input_tokens":$in,"output_tokens":$out,[^\n]*"estimated":true\}/,
        'stream, absurd usage: the cost event carries the estimate');
}


# --------------------------------------------------------------------------
# JSON as any writer may spell it: spaces after ':' and ',', \uXXXX escapes
# (surrogate pairs too); the text counts the bytes it decodes to

my $U = "caf\x{e9} \x{2713} \x{65e5}\x{672c}\x{8a9e} \x{1f680}";
for my $c (['', 'chat'], [' [emu:chat-completion]', 'chat, chat.completion'])
{
    my ($shape, $what) = @$c;
    my $content = "spelled out$shape [emu:spaced] [emu:utf8] [emu:no-usage]";
    my $in = ceil4(utf8_len($content));
    my $out = ceil4(utf8_len("$G spelled out $U"));
    $env->run_case({
        name    => "$what, spaced JSON with escapes, no usage",
        chat    => { key => $k->{key}, content => $content },
        status  => 200,
        json    => { response => "$G spelled out $U" },
        record  => estimate($in, $out, status => '200', upstream_status => '200',
                            error => ''),
    });
}

{
    my $content = "spaced stream [emu:spaced] [emu:utf8] [emu:no-usage]";
    my $in = ceil4(utf8_len($content));
    my $out = ceil4(utf8_len("$G spaced stream $U"));
    $env->run_case({
        name    => 'stream, spaced JSON with escapes, no usage',
        chat    => { key => $k->{key}, content => $content,
                     extra => { stream => JSON::PP::true } },
        status  => 200,
        record  => estimate($in, $out, status => '200', upstream_status => '200',
                            error => '',
                            flags => qr/^usage_unknown,streamed,estimated$/),
    });
}

{
    my $content = "spaced openai [emu:spaced] [emu:utf8] [emu:no-usage]";
    my $in = ceil4(utf8_len($content));
    my $out = ceil4(utf8_len("$G spaced openai $U"));
    $env->run_case({
        name    => 'OpenAI stream, spaced JSON with escapes, no usage',
        http    => ['POST', '/v1/chat/completions',
                    headers => { Authorization => "Bearer $k->{key}" },
                    body => { model => $L8, stream => JSON::PP::true,
                              messages => [{ role => 'user', content => $content }] }],
        status  => 200,
        record  => estimate($in, $out, status => '200', upstream_status => '200',
                            error => '', route => 'openai',
                            flags => qr/^usage_unknown,streamed,estimated$/),
    });
}


# --------------------------------------------------------------------------
# not billed: refused before proxying, and Workers AI's own errors

$env->run_case({
    name     => 'unpriced model: refused before proxying, not billed',
    chat     => { key => $k->{key}, model => '@cf/no/such-model',
                  content => 'never sent' },
    status   => 400,
    upstream => 'none',
    record   => { status => '400', cost_pusd => '0', input_tokens => '0',
                  output_tokens => '0', flags => qr/^(?!.*estimated)/ },
});

$env->run_case({
    name     => 'a Workers AI error is not billed',
    chat     => { key => $k->{key}, content => 'no [emu:error 3040 429]' },
    status   => 429,
    record   => { status => '429', error => 'cf:3040', cost_pusd => '0',
                  flags => qr/^(?!.*estimated)/ },
});

$env->run_case({
    name     => 'a connection closed without a byte is not billed',
    chat     => { key => $k->{key}, content => 'no [emu:close]' },
    status   => 502,
    record   => { status => '502', upstream_status => '0', cost_pusd => '0',
                  flags => qr/^(?!.*estimated)/ },
});

# the gateway still works after all of that
$env->run_case({
    name   => 'healthy request afterwards',
    chat   => { key => $k->{key}, content => 'fine [emu:usage 3 4]' },
    status => 200,
    record => { status => '200', error => '', flags => '',
                cost_pusd => pusd($L8, 3, 4)->bstr },
});

$env->done;
done_testing;
