# Workers AI's response headers reach the client only when allowlisted
# (README, "Who can do what"): an upstream that echoes Authorization, sets a
# cookie, a Location or CORS, or adds anything else, hands none of it on;
# its request id (cf-ray), Retry-After and rate-limit headers do pass.
# Every route, streamed or not, a success and an error.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use CfcostTest;
use CfcostWire qw($L8 wire_init gw run_path auth_headers);

my $env = CfcostTest->start;
my $k = $env->create_key(user => 'headers');
wire_init(env => $env, key => $k, route => 'chat', user => 'headers');

my @banned = ('authorization', 'set-cookie', 'x-canary',
              'access-control-allow-origin', 'location');
my %allowed = ('cf-ray' => '8f0c2a1b3c4d5e6f-EMU', 'retry-after' => '7',
               'x-ratelimit-remaining' => '41',
               'x-ratelimit-limit-requests' => '1000',
               'ratelimit-policy' => '100;w=60');

my $JS = JSON::PP->new->canonical;

for my $route ('chat', 'openai', 'native') {
    for my $stream (0, 1) {
        for my $outcome (['200', ''], ['429', ' [emu:error 3040 429]']) {
            my ($status, $dir) = @$outcome;
            next if $stream && $status ne '200';
            my $content = "canaries [emu:headers] [emu:usage 3 4]$dir";
            my %body = (messages => [{ role => 'user', content => $content }]);
            $body{stream} = JSON::PP::true if $stream;
            my $path = $route eq 'chat' ? '/api/ai/chat'
                     : $route eq 'openai' ? '/v1/chat/completions'
                     : run_path($L8, 'acct');
            $body{model} = $L8 unless $route eq 'native';
            my $r = gw('POST', $path, $JS->encode(\%body),
                       'Content-Type' => 'application/json', auth_headers());
            my $name = "$route" . ($stream ? ' stream' : '') . ", $status";

            is($r->{status}, $status, "$name: status");
            for my $h (@banned) {
                ok(!exists $r->{headers}{$h}, "$name: no $h")
                    or diag("$h: $r->{headers}{$h}");
            }
            for my $h (sort keys %allowed) {
                is($r->{headers}{$h}, $allowed{$h}, "$name: $h passes");
            }
            like($r->{headers}{'x-cfcost-request-id'} // '', qr/^[0-9a-f]{32}$/,
                 "$name: cfcost's own request id is there");
            unlike(join("\n", map { "$_: $r->{headers}{$_}" } keys %{ $r->{headers} }),
                   qr/upstream-echoed-secret|session=upstream|leaked/,
                   "$name: no canary value anywhere in the head");
        }
    }
}

$env->done;
done_testing;
