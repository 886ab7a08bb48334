# cfcost users list | disable | enable.
#
#   - disabling a user refuses every one of its keys (403, in each route's
#     shape) within the key cache's ttl, and keys create for it; other
#     users are not affected; enabling brings its keys back, revoked ones
#     excepted;
#   - users list shows keys, active keys, status and limit;
#   - the CLI checks its arguments.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP;
use CfcostTest;

my $MODEL = '@cf/meta/llama-3.1-8b-instruct';
my $JSON  = JSON::PP->new->utf8->canonical;

my $env = CfcostTest->start(workers => 2);

my $a1 = $env->create_key(user => 'alice');
my $a2 = $env->create_key(user => 'alice');
my $a3 = $env->create_key(user => 'alice');
my $b1 = $env->create_key(user => 'bob');
$env->revoke_key($a3->{id});

for my $k ($a1, $a2, $b1) {
    is($env->chat(key => $k->{key})->{status}, 200, "$k->{user}'s key works");
}

my ($rc, $out, $err) = $env->cli('users', 'disable', 'alice');
is($rc, 0, 'users disable alice') or diag("$out$err");
like($out, qr/alice disabled.*\(3 keys\)/, 'it says how many keys');

# the cached entries are trusted for ttl (1 s), then asked again
my $t0 = time;
my $r;
for my $k ($a1, $a2) {
    while (time - $t0 < 5) {
        $r = $env->chat(key => $k->{key});
        last if $r->{status} != 200;
        sleep 0.05;
    }
    is($r->{status}, 403, 'a disabled user\'s key is refused');
}
my $took = time - $t0;
ok($took < 1.6, sprintf('both keys within the key cache ttl (%.2f s)', $took));
like($r->{json}{detail} // '', qr/user is disabled/, 'and says why');
$r = $env->chat(key => $a2->{key}, auth => 'bearer',
                path => '/v1/chat/completions');
is($r->{status}, 403, 'on /v1 too') or diag("$r->{status} $r->{body}");
is($r->{json}{error}{type}, 'permission_error', "in OpenAI's shape");
$r = $env->chat(key => $a2->{key}, auth => 'bearer',
                path => "/client/v4/accounts/test-account/ai/run/$MODEL",
                body => { messages => [{ role => 'user', content => 'x' }] });
is($r->{status}, 403, 'and on the native route');
is($env->chat(key => $b1->{key})->{status}, 200, 'bob is not affected');

($rc, $out, $err) = $env->cli('keys', 'create', '--user', 'alice');
is($rc, 1, 'no key can be created for a disabled user');
like($err, qr/alice is disabled/, 'and the CLI says so');

($rc, $out, $err) = $env->cli('users', 'list', '--json');
is($rc, 0, 'users list --json');
my $list = eval { $JSON->decode($out) } // [];
is_deeply($list, [
    { user => 'alice', keys => 3, active_keys => 2, disabled => JSON::PP::true,
      rpm => undef },
    { user => 'bob', keys => 1, active_keys => 1, disabled => JSON::PP::false,
      rpm => undef },
], 'users list: keys, active keys, status') or diag($out);
($rc, $out, $err) = $env->cli('users', 'list');
like($out, qr/^alice\s+3\s+2\s+disabled\s+-$/m, 'users list as a table');

($rc, $out, $err) = $env->cli('users', 'enable', 'alice');
is($rc, 0, 'users enable alice') or diag("$out$err");
sleep 1.3;
is($env->chat(key => $a1->{key})->{status}, 200, 'enabled: its keys work');
is($env->chat(key => $a3->{key})->{status}, 401, 'a revoked one stays revoked');
my $a4 = $env->create_key(user => 'alice');
is($env->chat(key => $a4->{key})->{status}, 200, 'and new keys can be made');

# a user disabled, then a limit set: both travel in the key record
$env->cli('users', 'disable', 'bob');
is($env->redis('HGET', "cfcost:key:$b1->{hash}", 'user_disabled'), '1',
   'the flag is in the key record');
$env->cli('users', 'enable', 'bob');
is($env->redis('HGET', "cfcost:key:$b1->{hash}", 'user_disabled'), undef,
   'and gone once enabled');

for my $bad (['users', 'disable'], ['users', 'disable', 'a b'],
             ['users', 'disable', 'x', 'y'], ['users', 'list', '--yaml'],
             ['users', 'frobnicate'])
{
    ($rc, $out, $err) = $env->cli(@$bad);
    is($rc, 2, "@$bad: a usage error") or diag("$out$err");
}
($rc, $out, $err) = $env->cli('users', 'disable', 'nobody');
is($rc, 1, 'an unknown user fails');
like($err, qr/no such user: nobody/, 'and says so');
is($env->redis('EXISTS', 'cfcost:user:nobody'), 0,
   'and leaves nothing behind');

$env->done;
done_testing();
