# Redis users per role (README, "Security model"; conf/redis-users.acl.in):
# a client that does not authenticate can do nothing; the gateway, the
# aggregator and the CLI each can do what they need and nothing more; the
# secrets are in files closed to other users and on no command line; a
# password Redis refuses stops nothing for good (the gateway holds its
# records and reconnects once the ACL is fixed); rotating a role's
# password, as the README says, loses no request and no record.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use IO::Select;
use JSON::PP;
use Time::HiRes qw(time sleep);
use CfcostTest;

my $env = CfcostTest->start(aggregator => 1);
my $T = $env->tmp;
my $ROOT = CfcostTest->root;
my $JS = JSON::PP->new->utf8->canonical;
my $k = $env->create_key(user => 'acl');
ok($k && $k->{key}, 'the CLI creates a key as cfcost-cli');

# ---------------------------------------------------------------- a client

# One command on a new connection, after AUTH with @auth when given.
# Returns the first reply line ("+OK", "-NOPERM ...", ":1", "$5"...).
sub as {
    my ($auth, @cmd) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $env->redis_port, Proto => 'tcp', Timeout => 3)
        or return "connect: $!";
    my @all = ($auth ? (['AUTH', @$auth]) : (), \@cmd);
    my $line;
    for my $c (@all) {
        my $req = '*' . @$c . "\r\n";
        $req .= '$' . length($_) . "\r\n$_\r\n" for @$c;
        print $s $req;
        $line = readline_to($s);
        return "AUTH: $line" if $c->[0] eq 'AUTH' && $line ne '+OK';
    }
    close $s;
    return $line;
}

sub readline_to {
    my ($s) = @_;
    my $buf = '';
    my $sel = IO::Select->new($s);
    my $until = time + 5;
    while ($buf !~ /\r\n/ && time < $until) {
        last unless $sel->can_read(0.5);
        my $n = sysread($s, $buf, 4096, length $buf);
        last unless $n;
    }
    $buf =~ s/\r\n.*//s;
    return $buf;
}

my %cred = map { $_ => [$env->redis_credentials($_)] }
           qw(gateway aggregator cli admin);

# ------------------------------------------------------- no password, none

like(as(undef, 'PING'), qr/^-NOAUTH/, 'no AUTH: PING refused (NOAUTH)');
like(as(undef, 'HGETALL', "cfcost:key:x"), qr/^-NOAUTH/,
     'no AUTH: reading keys refused');
like(as(['default', 'x'], 'PING'), qr/^AUTH: -WRONGPASS/,
     'the default user (the admin) wants its password');
like(as([$cred{gateway}[0], 'not-the-password'], 'PING'),
     qr/^AUTH: -WRONGPASS/, 'a wrong password is refused');

# ----------------------------------------------------- each role's reach

my @cases = (
    # role, command, allowed?
    [gateway => ['HMGET', 'cfcost:key:x', 'user'], 1],
    [gateway => ['XADD', 'cfcost:rec:{wtest}', '*', 'v', '1'], 1],
    [gateway => ['HSET', 'cfcost:key:x', 'user', 'mallory'], 0],
    [gateway => ['XRANGE', 'cfcost:rec:{wtest}', '-', '+'], 0],
    [gateway => ['HGETALL', 'cfcost:r:all'], 0],
    [gateway => ['HGETALL', 'cfcost:key:x'], 0],
    [gateway => ['DEL', 'cfcost:keys'], 0],
    [gateway => ['FLUSHALL'], 0],
    [gateway => ['CONFIG', 'GET', 'dir'], 0],
    [gateway => ['KEYS', '*'], 0],
    # the gateway runs its rate-limit script (EVAL/EVALSHA): a script
    # runs as its caller, under the same rules
    [gateway => ['EVAL', "return redis.call('GET', KEYS[1])", '1',
                 'cfcost:rl:key:x'], 1],
    [gateway => ['EVAL', "return redis.call('HSET', KEYS[1], 'user', 'm')",
                 '1', 'cfcost:key:x'], 0],
    [gateway => ['EVAL', "return redis.call('GET', KEYS[1])", '1',
                 'cfcost:r:all'], 0],
    [gateway => ['EVAL', "return redis.call('FLUSHALL')", '0'], 0],
    [gateway => ['SET', 'cfcost:other', '1'], 0],
    [gateway => ['ACL', 'LIST'], 0],
    [aggregator => ['HGETALL', 'cfcost:r:all'], 1],
    [aggregator => ['HGET', 'cfcost:key:x', 'user'], 1],
    [aggregator => ['HSET', 'cfcost:key:x', 'user', 'mallory'], 0],
    [aggregator => ['DEL', 'cfcost:key:x'], 0],
    [aggregator => ['XADD', 'cfcost:rec:{wtest}', '*', 'v', '1'], 0],
    [aggregator => ['FLUSHALL'], 0],
    [aggregator => ['CONFIG', 'SET', 'dir', '/tmp'], 0],
    [aggregator => ['EVAL', 'return 1', '0'], 0],
    [aggregator => ['SET', 'cfcost:other', '1'], 0],
    [cli => ['HGETALL', 'cfcost:keys'], 1],
    [cli => ['XRANGE', 'cfcost:rec:{wtest}', '-', '+'], 0],
    [cli => ['HGETALL', 'cfcost:r:all'], 0],
    [cli => ['XADD', 'cfcost:rec:{wtest}', '*', 'v', '1'], 0],
    [cli => ['FLUSHALL'], 0],
    [cli => ['DEBUG', 'SLEEP', '0'], 0],
    [admin => ['ACL', 'WHOAMI'], 1],
);
for my $c (@cases) {
    my ($role, $cmd, $ok) = @$c;
    my $r = as($cred{$role}, @$cmd);
    my $what = join ' ', grep { defined } @$cmd[0 .. 1];
    if ($ok) {
        unlike($r, qr/^(-|AUTH)/, "$role may $what") or diag($r);
    } else {
        # a script's refused command: "-ERR The user executing the script
        # can't run this command" (Redis 7.0)
        like($r, qr/^-(NOPERM|ERR The user executing the script can't)/,
             "$role may not $what") or diag($r);
    }
}
$env->redis('DEL', 'cfcost:rec:{wtest}');

# ---------------------------------------------------- the whole pipeline

# ACL LOAD closes every connection (Redis 7.0): this one's next command
# would fail; a PING that may fail reconnects the harness's client
sub acl_load {
    my $r = $env->redis('ACL', 'LOAD');
    $env->redis('PING');
    return $r;
}

sub chat_ok {
    my $r = $env->chat(key => $k->{key});
    return $r->{status} == 200 ? $r->{headers}{'x-cfcost-request-id'} : undef;
}

sub admin_requests {
    my $r = $env->http('GET', '/api/usage',
        headers => { Authorization => 'Bearer ' . $env->admin_token });
    return -1 unless $r->{status} == 200;
    return $JS->decode($r->{body})->{total_requests} // 0;
}

sub settle {
    my ($n) = @_;
    my $until = time + 20;
    while (time < $until) {
        return 1 if $env->record_count == $n && admin_requests() == $n;
        sleep 0.1;
    }
    diag("records " . $env->record_count . ", counted " . admin_requests()
         . ", want $n");
    return 0;
}

my $sent = 0;
my $ok = 0;
for (1 .. 20) { $sent++; $ok++ if chat_ok() }
is($ok, 20, '20 requests through the gateway, each authenticated to Redis');
ok(settle($sent), 'records = requests = the aggregator\'s total');

# --------------------------------------------------------- no secret leaks

my $acl = CfcostTest::_slurp("$T/redis-users.acl");
for my $role (sort keys %cred) {
    my $p = $cred{$role}[1];
    is(sprintf('%o', (stat $env->redis_auth_file($role))[2] & 0777), '600',
       "redis-$role.auth is 0600");
    unlike($acl, qr/\Q$p\E/, "the ACL file holds no $role password");
}
my @cmdlines;
for my $pid ($env->redis_pid, $env->nginx_pid, $env->worker_pids,
             $env->{pids}{aggregator}) {
    push @cmdlines, CfcostTest::_slurp("/proc/$pid/cmdline");
}
my $joined = join "\n", @cmdlines;
ok(!grep({ index($joined, $_->[1]) >= 0 } values %cred),
   'no password on any command line (ps shows them to every user)');

SKIP: {
    skip 'not root: no other user to try as', 6 if $> != 0;
    my $f = $env->redis_auth_file('gateway');
    my $out = `su nobody -s /bin/sh -c 'cat $f' 2>&1`;
    isnt($? >> 8, 0, 'user nobody cannot read the gateway\'s password');
    unlike($out, qr/\Q$cred{gateway}[1]\E/, '... and sees none of it');
    my $port = $env->redis_port;
    my $r = `su nobody -s /bin/sh -c 'redis-cli -p $port GET x' 2>&1`;
    like($r, qr/NOAUTH/, 'user nobody reaches Redis\'s port but can do '
         . 'nothing');

    # make run's check of what the workers open (scripts/reach), as a
    # user who cannot: it names the directory that stops them, and why
    mkdir "$T/private", 0700;
    mkdir "$T/private/inner", 0755;
    $env->_write("$T/private/inner/index.html", "x");
    my $reach = "$ROOT/scripts/reach";
    my $o = `su nobody -s /bin/sh -c '$reach dashboard $T/private/inner/index.html read' 2>&1`;
    is($? >> 8, 1, 'scripts/reach: nobody cannot reach a file under a 0700 '
       . 'directory');
    my $file = qr{cannot read \Q$T\E/private/inner/index\.html \(dashboard\)};
    my $why = qr{\Q$T\E/private is drwx------, owner root:\S+; nobody needs to search};
    like($o, qr{$file:.*$why}s, '... and says which directory, its mode and '
         . 'owner, and what is missing') or diag($o);
    `$reach dashboard $T/private/inner/index.html read 2>&1`;
    is($? >> 8, 0, '... while its owner can');
}

# ----------------------------------------- a file open to everyone: refused

{
    my $f = "$T/open.auth";
    $env->_write($f, "$cred{cli}[0] $cred{cli}[1]\n");
    chmod 0644, $f;
    my ($rc, $out, $err) = $env->cli('--redis-auth', $f, 'keys', 'list');
    is($rc, 1, 'the CLI refuses a credentials file open to everyone');
    like($err, qr/open to every local user.*chmod o-rwx/,
         '... and says what to do');

    my $agg = $env->build_dir . '/cfcost-aggregator';
    my $o = `$agg --listen unix:$T/x.sock --redis 127.0.0.1:1 --redis-auth $f 2>&1`;
    is($? >> 8, 2, 'the aggregator refuses it (usage error)');
    like($o, qr/--redis-auth: .*open to every local user/, '... and says why');

    (my $conf = $env->conf_text) =~
        s{cfcost_redis_auth_file [^;]+;}{cfcost_redis_auth_file $f;};
    my ($nrc, $nout) = $env->nginx_test_conf($conf);
    isnt($nrc, 0, 'nginx -t refuses it');
    like($nout, qr/closed to other users/, '... and says why');

    $env->_write($f, "one two three\n");
    chmod 0600, $f;
    ($rc, $out, $err) = $env->cli('--redis-auth', $f, 'keys', 'list');
    is($rc, 1, 'the CLI refuses a file of three words');
    like($err, qr/one line/, '... saying what the file must hold');
}

# ------------------------ Redis refuses the gateway: nothing lost, it heals

{
    # the gateway's password changes in Redis only, and its connections go
    my $good = CfcostTest::_slurp("$T/redis-users.acl");
    (my $bad = $good) =~ s/(user cfcost-gateway on )#[0-9a-f]{64}/$1#${\('0' x 64)}/
        or die 'no gateway user in the ACL file';
    $env->_write("$T/redis-users.acl", $bad);
    is(acl_load(), 'OK', 'ACL LOAD: the gateway\'s password '
       . 'is no longer valid');
    like(as($cred{gateway}, 'PING'), qr/^AUTH: -WRONGPASS/,
         'the gateway\'s password is refused now');
    $env->redis('CLIENT', 'KILL', 'USER', 'cfcost-gateway');
    $env->allow_error(qr/refused AUTH as "cfcost-gateway"/,
                      qr/lost the connection to Redis/,
                      qr/cannot connect to Redis/,
                      qr/Redis at .* did not answer/);

    my $until = time + 10;
    sleep 0.1 until $env->error_log =~ /refused AUTH as "cfcost-gateway"/
                    || time > $until;
    my $before = $sent;
    my ($served, $refused) = (0, 0);
    for (1 .. 10) {
        $sent++;
        my $r = $env->chat(key => $k->{key});
        if ($r->{status} == 200) { $served++ } else { $refused++ }
    }
    diag("with the gateway refused by Redis: $served served (cached key), "
         . "$refused refused");
    like($env->error_log, qr/refused AUTH as "cfcost-gateway".*WRONGPASS/,
         'the error log says Redis refused the gateway\'s AUTH, and why');

    $env->_write("$T/redis-users.acl", $good);
    is(acl_load(), 'OK', 'ACL LOAD: the password is valid '
       . 'again');
    my $n = $before + $served;
    ok(settle($n), "every request served meanwhile is stored and counted "
       . "($n), none twice") or diag($env->error_log_tail);
    $sent = $n;

    $until = time + 10;
    my $back = 0;
    while (time < $until) { $sent++; if (chat_ok()) { $back = 1; last } sleep 0.2; $sent--; }
    ok($back, 'the gateway serves again with no restart');
    ok(settle($sent), 'and counts');
}

# ------------------------------------ rotation, as README's procedure says

{
    my $old = $cred{gateway}[1];
    system("$ROOT/scripts/redis-acl", '--rotate', 'gateway', $T) == 0
        or die 'redis-acl --rotate failed';
    my ($u, $new) = $env->redis_credentials('gateway');
    isnt($new, $old, '--rotate gateway: a new password');
    is(acl_load(), 'OK', 'ACL LOAD');
    unlike(as([$u, $old], 'PING'), qr/^AUTH/, 'the old password still works '
           . 'until --retire');
    unlike(as([$u, $new], 'PING'), qr/^AUTH/, 'the new one works');

    my $served = 0;
    $sent++; $served++ if chat_ok();
    $env->reload_nginx;
    $sent++; $served++ if chat_ok();
    system("$ROOT/scripts/redis-acl", '--retire', $T) == 0
        or die 'redis-acl --retire failed';
    is(acl_load(), 'OK', '--retire, ACL LOAD');
    like(as([$u, $old], 'PING'), qr/^AUTH: -WRONGPASS/,
         'the old password is refused now');
    $env->redis('CLIENT', 'KILL', 'USER', 'cfcost-gateway');
    for (1 .. 5) { $sent++; $served++ if chat_ok() }
    is($served, 7, 'every request served across the rotation');
    ok(settle($sent), 'and every one stored and counted once');

    # the aggregator's: it reads its file at start
    system("$ROOT/scripts/redis-acl", '--rotate', 'aggregator', $T) == 0
        or die;
    acl_load();
    $env->stop_aggregator;
    $env->start_aggregator;
    system("$ROOT/scripts/redis-acl", '--retire', $T) == 0 or die;
    acl_load();
    $sent++ if chat_ok();
    ok(settle($sent), 'the aggregator, restarted with its new password, '
       . 'counts on');

    # the CLI's: each command reads the file anew
    system("$ROOT/scripts/redis-acl", '--rotate', 'cli', '--', $T) != 0
        or die 'redis-acl took a stray argument';
    system("$ROOT/scripts/redis-acl", '--rotate', 'cli', $T) == 0 or die;
    system("$ROOT/scripts/redis-acl", '--retire', $T) == 0 or die;
    acl_load();
    my ($rc) = $env->cli('keys', 'list');
    is($rc, 0, 'the CLI works with its rotated password');
}

$env->done;
done_testing();
