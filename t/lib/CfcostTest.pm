package CfcostTest;

# Integration-test harness for cfcost.
#
# Each test file gets its own world: a temp dir, a redis-server, the
# Workers AI emulator and Debian's nginx running the shipped configuration
# template (conf/nginx.conf.in) with the built module, all on free loopback
# ports.  Core Perl only.
#
#   my $env = CfcostTest->start(workers => 2, pricing_json => $text);
#   my $k   = $env->create_key(user => 'alice');
#   my $r   = $env->chat(key => $k->{key}, content => 'hi [emu:usage 3 4]');
#   ...
#   $env->done;          # stops everything, checks the error log
#   done_testing;
#
# CFCOST_TEST_KEEP=1 keeps the temp dir (its path is printed).
# CFCOST_TEST_VERBOSE=1 prints what is started.
# CFCOST_BUILD=DIR takes the module, the CLI and the aggregator from DIR
# (relative to the project root unless absolute) instead of build/.
# CFCOST_SANITIZE=DIR (`make test-sanitize`, with CFCOST_BUILD=build/asan):
# the binaries are built with -fsanitize=address,undefined; nginx runs with
# the ASan runtime preloaded (scripts/sanitized-nginx); ASAN_OPTIONS and
# UBSAN_OPTIONS are set so that every report is written to DIR (asan.PID,
# ubsan.PID) and the process aborts; done() fails if a report appeared.

use strict;
use warnings;

use Test::More ();
use IO::Socket::INET;
use IO::Select;
use HTTP::Tiny;
use JSON::PP;
use File::Temp ();
use File::Path ();
use File::Spec;
use File::Basename ();
use Cwd ();
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);
use Digest::SHA qw(sha256_hex);

our $ROOT = Cwd::abs_path(File::Basename::dirname(__FILE__) . '/../..');

# where the built binaries are: build/, or build/asan for test-sanitize
our $BUILD = do {
    my $b = $ENV{CFCOST_BUILD} // '';
    $b = 'build' unless length $b;
    $b =~ m{^/} ? $b : "$ROOT/$b";
};
our $SANITIZE = $ENV{CFCOST_SANITIZE} || undef;   # the report directory

our $NGINX   = $ENV{CFCOST_TEST_NGINX}
    || ($SANITIZE ? "$ROOT/scripts/sanitized-nginx" : '/usr/sbin/nginx');
our $REDIS   = $ENV{CFCOST_TEST_REDIS}   || 'redis-server';
our $PYTHON  = $ENV{CFCOST_TEST_PYTHON}  || '/usr/bin/python3';
our $MODULE  = "$BUILD/ngx_http_cfcost_module.so";
our $CLI     = "$BUILD/cfcost";
our $AGGREGATOR = "$BUILD/cfcost-aggregator";
our $EMU     = "$ROOT/emulator/cf_emulator.py";

my %SAN_SEEN;       # report files that were there before, or already failed

if ($SANITIZE) {
    $SANITIZE = File::Spec->rel2abs($SANITIZE, $ROOT);
    File::Path::make_path($SANITIZE);
    chmod 01777, $SANITIZE;     # nginx workers run as nobody
    # inherited by every child: the CLI, the aggregator, nginx (whose
    # wrapper adds detect_leaks=0 and preloads the runtime).  Options the
    # caller already set come last, so they win.  With gcc 12 UBSan's own
    # message goes to the process' stderr whatever its log_path (libubsan's
    # call to __sanitizer_set_report_path binds to libasan's, so UBSan's
    # log_path may even name ASan's files: it must point here too); the
    # abort that follows is reported to a file here by ASan (handle_abort),
    # with the stack through the __ubsan_handle_* function.
    $ENV{ASAN_OPTIONS} = join ':', "log_path=$SANITIZE/asan",
        'abort_on_error=1', 'handle_abort=1', 'detect_leaks=1',
        grep { length } $ENV{ASAN_OPTIONS} // '';
    $ENV{UBSAN_OPTIONS} = join ':', "log_path=$SANITIZE/ubsan",
        'halt_on_error=1', 'abort_on_error=1', 'print_stacktrace=1',
        grep { length } $ENV{UBSAN_OPTIONS} // '';
    unless ($ENV{CFCOST_ASAN_RUNTIME}) {
        my $rt = `gcc -print-file-name=libasan.so 2>/dev/null` // '';
        chomp $rt;
        $rt = Cwd::abs_path($rt) if length $rt;
        $ENV{CFCOST_ASAN_RUNTIME} = $rt if defined $rt && -f $rt;
    }
    $SAN_SEEN{$_} = 1 for _sanitizer_files();
}

our $ACCOUNT = 'test-account';
our $TOKEN   = 'test-upstream-token';

my $JSON = JSON::PP->new->utf8->canonical;

my %LIVE;           # refaddr -> env, for the END-block cleanup
my %USED_PORTS;

$SIG{PIPE} = 'IGNORE';


sub _log {
    Test::More::diag(@_) if $ENV{CFCOST_TEST_VERBOSE};
}


# --------------------------------------------------------------------------
# start / stop

sub start {
    my ($class, %opt) = @_;

    my @missing = grep { !-e $_->[0] } (
        [$MODULE, 'the nginx module (run make)'],
        [$CLI,    'the cfcost CLI (run make)'],
        [$EMU,    'the Workers AI emulator'],
        [$NGINX,  'nginx'],
    );
    if (@missing) {
        Test::More::fail("prerequisite missing: $_->[0] ($_->[1])")
            for @missing;
        Test::More::done_testing();
        exit 255;
    }

    my $tmp = File::Temp::tempdir('cfcost-test-XXXXXX',
        TMPDIR => 1, CLEANUP => 0);
    chmod 0755, $tmp;           # nginx workers run as nobody
    mkdir "$tmp/tmp" or die "mkdir $tmp/tmp: $!";
    chmod 0777, "$tmp/tmp";

    my $self = bless {
        tmp        => $tmp,
        owner      => $$,
        workers    => $opt{workers} // 2,
        allow      => [],
        pids       => {},
        done       => 0,
        log_level  => $opt{log_level} // 'info',
        redis_args => $opt{redis_args},
    }, $class;
    $LIVE{"$self"} = $self;

    Test::More::diag("cfcost test dir: $tmp") if $ENV{CFCOST_TEST_KEEP};

    if (defined $opt{pricing_json}) {
        $self->{pricing} = "$tmp/pricing.json";
        $self->write_pricing($opt{pricing_json});
    } else {
        $self->{pricing} = $opt{pricing} // "$ROOT/conf/pricing.json";
    }

    # nginx loads a private copy of the module: a rebuild that rewrites
    # build/ngx_http_cfcost_module.so in place would otherwise change the
    # code under the running workers (SIGSEGV/SIGILL).  Set
    # CFCOST_TEST_MODULE_INPLACE=1 to load the build path itself.
    if ($ENV{CFCOST_TEST_MODULE_INPLACE}) {
        $self->{module} = $MODULE;
    } else {
        $self->{module} = "$tmp/ngx_http_cfcost_module.so";
        $self->_write($self->{module}, _slurp($MODULE));
        chmod 0755, $self->{module};
    }

    $self->{redis_port} = free_port();
    $self->{emu_port}   = free_port();
    $self->{port}       = free_port();

    # the admin token the shipped config reads (cfcost_admin_token_file)
    $self->{admin_token} = join '', map { sprintf '%02x', int rand 256 } 1 .. 20;
    $self->_write("$tmp/admin-token", "$self->{admin_token}\n");
    $self->{metrics_token} = join '', map { sprintf '%02x', int rand 256 } 1 .. 20;
    $self->_write("$tmp/metrics-token", "$self->{metrics_token}\n");

    # Redis users per role, as make run has them: the module, the
    # aggregator and the CLI authenticate as their own user, this harness
    # as the admin, Redis's default user (scripts/redis-acl;
    # conf/redis-users.acl.in)
    system("$ROOT/scripts/redis-acl", $tmp) == 0
        or die "scripts/redis-acl $tmp failed\n";
    ($self->{redis_admin_pass}) =
        _slurp("$tmp/redis-admin.auth") =~ /^\S+ (\S+)/ or die;

    $self->start_redis;
    $self->start_emulator;
    $self->start_aggregator if $opt{aggregator};
    $self->{conf_text} = $self->render_conf(%{ $opt{conf_vars} || {} });
    $self->_write("$tmp/nginx.conf", $self->{conf_text});
    $self->start_nginx unless exists $opt{nginx} && !$opt{nginx};

    return $self;
}


sub build_dir  { $BUILD }
sub tmp        { $_[0]{tmp} }
sub port       { $_[0]{port} }
sub redis_port { $_[0]{redis_port} }
sub emu_port   { $_[0]{emu_port} }
sub redis_addr { "127.0.0.1:$_[0]{redis_port}" }
sub pricing    { $_[0]{pricing} }
sub root       { $ROOT }


# Returns a loopback TCP port that was free a moment ago, never the same one
# twice in this process.
sub free_port {
    for (1 .. 50) {
        my $s = IO::Socket::INET->new(
            LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp',
            Listen => 1, ReuseAddr => 0,
        ) or die "cannot bind 127.0.0.1:0: $!";
        my $p = $s->sockport;
        close $s;
        next if $USED_PORTS{$p}++;
        return $p;
    }
    die "no free port found";
}


sub _write {
    my ($self, $path, $text) = @_;
    open my $fh, '>', $path or die "write $path: $!";
    binmode $fh;
    print $fh $text;
    close $fh or die "close $path: $!";
}


sub _slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return '';
    binmode $fh;
    local $/;
    my $t = <$fh>;
    return $t // '';
}


sub write_pricing {
    my ($self, $text) = @_;
    $text = $JSON->encode($text) if ref $text;
    $self->_write($self->{pricing}, $text);
}


# Forks and execs @cmd with stdout/stderr appended to $log; returns the pid.
sub _spawn {
    my ($self, $log, $env, @cmd) = @_;
    _log("spawn: @cmd");
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT or POSIX::_exit(126);
        $ENV{$_} = $env->{$_} for keys %{ $env || {} };
        { no warnings q(exec); exec { $cmd[0] } @cmd; }
        print STDERR "exec $cmd[0]: $!\n";
        POSIX::_exit(127);
    }
    return $pid;
}


my %REAPED;

sub _alive {
    my ($pid) = @_;
    return 0 if !$pid || $REAPED{$pid};
    my $r = waitpid($pid, WNOHANG);
    if ($r == $pid || $r == -1) {
        $REAPED{$pid} = 1;
        return 0;
    }
    return 1;
}


# Sends $sig, waits up to $timeout s; escalates to TERM then KILL.
sub _stop_pid {
    my ($pid, $sig, $timeout) = @_;
    return if !$pid || !_alive($pid);
    for my $s ($sig, 'TERM', 'KILL') {
        kill $s, $pid;
        my $until = time + ($s eq $sig ? $timeout : 3);
        while (time < $until) {
            return unless _alive($pid);
            sleep 0.02;
        }
    }
    waitpid($pid, 0);
    $REAPED{$pid} = 1;
}


sub _can_connect {
    my ($port) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
        Proto => 'tcp', Timeout => 1);
    return 0 unless $s;
    close $s;
    return 1;
}


sub start_redis {
    my ($self) = @_;
    my $t = $self->{tmp};
    die "redis already running" if _alive($self->{pids}{redis});
    $self->_redis_drop;
    my $pid = $self->_spawn("$t/redis.out", undef,
        $REDIS, '--port', $self->{redis_port}, '--bind', '127.0.0.1',
        '--save', '', '--appendonly', 'no', '--dir', $t,
        '--daemonize', 'no', '--logfile', "$t/redis.log",
        '--enable-debug-command', 'yes', '--aclfile', "$t/redis-users.acl",
        @{ $self->{redis_args} || [] });
    $self->{pids}{redis} = $pid;
    my $until = time + ($self->{redis_start_timeout} // 10);
    while (time < $until) {
        die "redis-server exited early:\n" . _slurp("$t/redis.out")
            . _slurp("$t/redis.log")
            unless _alive($pid);
        if (_can_connect($self->{redis_port})) {
            my $r = $self->redis('PING');
            return 1 if defined $r && !ref $r && $r eq 'PONG';
            $self->_redis_drop;
        }
        sleep 0.05;
    }
    die "redis-server did not answer PING within 10 s:\n"
        . _slurp("$t/redis.log");
}


sub redis_pid { $_[0]{pids}{redis} }


# kill -9, as a crash would: nothing flushed beyond what its fsync policy
# already wrote
sub kill_redis {
    my ($self) = @_;
    $self->_redis_drop;
    _stop_pid(delete $self->{pids}{redis}, 'KILL', 5);
}


sub stop_redis {
    my ($self) = @_;
    $self->_redis_drop;
    _stop_pid(delete $self->{pids}{redis}, 'TERM', 5);
}


sub start_emulator {
    my ($self) = @_;
    my $t = $self->{tmp};
    my $log = "$t/emulator.log";
    my $pid = $self->_spawn($log, { PYTHONUNBUFFERED => 1 },
        $PYTHON, $EMU, '--listen', "127.0.0.1:$self->{emu_port}",
        '--token', $TOKEN, '--account', $ACCOUNT);
    $self->{pids}{emulator} = $pid;
    my $until = time + 15;
    while (time < $until) {
        die "emulator exited early:\n" . _slurp($log) unless _alive($pid);
        return 1 if _slurp($log) =~ /cf-emulator listening on/;
        sleep 0.05;
    }
    die "emulator did not print its listening line within 15 s:\n"
        . _slurp($log);
}


# Renders conf/nginx.conf.in.  %over replaces any @NAME@ value.  Dies if a
# placeholder is left outside comments.
sub render_conf {
    my ($self, %over) = @_;
    my $t = $self->{tmp};
    my %v = (
        MODULE            => $self->{module} // $MODULE,
        WORKERS           => $self->{workers},
        VAR               => $t,
        LOG_LEVEL         => $self->{log_level},
        PRICING           => $self->{pricing},
        REDIS             => $self->redis_addr,
        CF_ACCOUNT_ID     => $ACCOUNT,
        CF_API_TOKEN      => $TOKEN,
        UPSTREAM_HOSTPORT => "127.0.0.1:$self->{emu_port}",
        UPSTREAM_HOST     => '127.0.0.1',
        UPSTREAM_SCHEME   => 'http',
        PORT              => $self->{port},
        ROOT              => "$ROOT/dashboard",
        %over,
    );
    my $text = _slurp("$ROOT/conf/nginx.conf.in");
    die "cannot read $ROOT/conf/nginx.conf.in" unless length $text;
    $text =~ s/\@([A-Z][A-Z0-9_]*)\@/exists $v{$1} ? $v{$1} : "\@$1\@"/ge;
    (my $code = $text) =~ s/#[^\n]*//g;
    if ($code =~ /(\@[A-Z][A-Z0-9_]*\@)/) {
        die "conf/nginx.conf.in: placeholder $1 left unreplaced\n";
    }
    return $text;
}


sub conf_text { $_[0]{conf_text} }


sub start_nginx {
    my ($self) = @_;
    my $t = $self->{tmp};
    my $pid = $self->_spawn("$t/nginx.out", undef,
        $NGINX, '-p', "$t/", '-c', "$t/nginx.conf", '-e', "$t/error.log");
    $self->{pids}{nginx} = $pid;
    my $until = time + 15;
    while (time < $until) {
        unless (_alive($pid)) {
            delete $self->{pids}{nginx};
            die "nginx exited early:\n" . _slurp("$t/nginx.out")
                . _slurp("$t/error.log");
        }
        if (_can_connect($self->{port})) {
            # the listener is open in the master; wait for the workers too
            my $w_until = time + 5;
            while (time < $w_until
                   && scalar($self->worker_pids) < $self->{workers})
            {
                sleep 0.02;
            }
            return 1;
        }
        sleep 0.05;
    }
    die "nginx did not accept on port $self->{port} within 15 s:\n"
        . _slurp("$t/error.log");
}


sub nginx_pid { $_[0]{pids}{nginx} }


# Children of the nginx master (its workers), from /proc.
sub worker_pids {
    my ($self) = @_;
    my $master = $self->{pids}{nginx} or return ();
    my @w;
    opendir my $d, '/proc' or return ();
    for my $p (grep { /^\d+$/ } readdir $d) {
        my $stat = _slurp("/proc/$p/stat") or next;
        # pid (comm) state ppid ...
        next unless $stat =~ /\)\s+\S+\s+(\d+)/;
        next unless $1 == $master;
        my $cmd = _slurp("/proc/$p/cmdline");
        next if $cmd =~ /cache (manager|loader)/;
        push @w, $p;
    }
    @w = sort { $a <=> $b } @w;
    return wantarray ? @w : scalar @w;
}


# SIGHUP to the master; returns once a full set of new workers runs and the
# old ones have gone (bounded).  Dies if no new workers appear (a rejected
# configuration keeps the old ones).
sub reload_nginx {
    my ($self, %opt) = @_;
    my $master = $self->{pids}{nginx} or die "nginx not running";
    my %old = map { $_ => 1 } $self->worker_pids;
    kill 'HUP', $master or die "kill HUP $master: $!";
    my $until = time + ($opt{timeout} // 15);
    my @new;
    while (time < $until) {
        @new = grep { !$old{$_} } $self->worker_pids;
        last if @new >= $self->{workers};
        sleep 0.05;
    }
    die "reload: no new nginx workers within the timeout (old: "
        . join(',', sort keys %old) . "; now: "
        . join(',', $self->worker_pids) . ")\n" . $self->error_log_tail
        if @new < $self->{workers};
    # let the old workers finish and exit, so new connections surely reach
    # the new generation
    my $gone_until = time + ($opt{old_timeout} // 10);
    while (time < $gone_until) {
        last unless grep { kill 0, $_ } keys %old;
        sleep 0.05;
    }
    return @new;
}


sub stop_nginx {
    my ($self, $which) = @_;
    $which //= 'nginx';             # or nginx2: start_second_nginx's
    my $pid = delete $self->{pids}{$which} or return;
    my @workers = do { local $self->{pids}{nginx} = $pid; $self->worker_pids };
    _stop_pid($pid, 'QUIT', 10);
    for my $w (@workers) {
        kill 'KILL', $w if kill 0, $w;
    }
}


# A second gateway on the same Redis, upstream and aggregator: the shipped
# configuration with its own port, directory ($tmp/gw2, the secrets
# copied) and error log (error_log and done read it too).  Returns its
# port; it stops with the rest.
sub start_second_nginx {
    my ($self) = @_;
    my $t = $self->{tmp};
    my $v = "$t/gw2";
    die "a second nginx already runs" if $self->{pids}{nginx2};
    for my $d ($v, "$v/tmp") {
        mkdir $d or die "mkdir $d: $!" unless -d $d;
    }
    chmod 0755, $v;
    chmod 0777, "$v/tmp";
    for my $f (qw(redis-gateway.auth admin-token metrics-token)) {
        next unless -e "$t/$f";
        $self->_write("$v/$f", _slurp("$t/$f"));
        chmod((stat "$t/$f")[2] & 07777, "$v/$f");
    }
    my $port = free_port();
    my $conf = $self->render_conf(VAR => $v, PORT => $port);
    $conf =~ s{unix:\Q$v\E/agg\.sock}{unix:$t/agg.sock}g;
    $self->_write("$v/nginx.conf", $conf);
    my $pid = $self->_spawn("$v/nginx.out", undef,
        $NGINX, '-p', "$v/", '-c', "$v/nginx.conf", '-e', "$v/error.log");
    $self->{pids}{nginx2} = $pid;
    my $until = time + 15;
    until (_can_connect($port)) {
        die "the second nginx did not start:\n" . _slurp("$v/error.log")
            if time > $until || !_alive($pid);
        sleep 0.05;
    }
    sleep 0.2;                  # its workers
    return $port;
}


sub stop_second_nginx { $_[0]->stop_nginx('nginx2') }


# The usage API daemon, on the unix socket the shipped config proxies to.
sub start_aggregator {
    my ($self, @extra) = @_;
    my $t = $self->{tmp};
    my $bin = $AGGREGATOR;
    die "prerequisite missing: $bin (run make)\n" unless -x $bin;
    unlink "$t/agg.sock";
    # run as root, nginx's workers are nobody: the identity headers they
    # set must count (the aggregator trusts its own user and root only)
    $self->{pids}{aggregator} = $self->_spawn("$t/aggregator.log", {},
        $bin, '--listen', "unix:$t/agg.sock", '--redis', $self->redis_addr,
        '--redis-auth', "$t/redis-aggregator.auth",
        '--block', 200, ($> == 0 ? ('--trust-user', 'nobody') : ()), @extra);
    my $until = time + 10;
    until (-S "$t/agg.sock") {
        die "the aggregator did not start: see $t/aggregator.log\n"
            if time > $until || !_alive($self->{pids}{aggregator});
        select undef, undef, undef, 0.05;
    }
    return $self->{pids}{aggregator};
}


# GET $path from the aggregator itself (its unix socket), with headers
# (X-Cfcost-User, X-Cfcost-Admin...).  Returns (status, the body decoded
# as JSON or undef, the body).
sub agg_get {
    my ($self, $path, %h) = @_;
    require IO::Socket::UNIX;
    my $s = IO::Socket::UNIX->new(Peer => "$self->{tmp}/agg.sock")
        or die "connect: $!";
    my $hdr = join '', map { "$_: $h{$_}\r\n" } sort keys %h;
    print $s "GET $path HTTP/1.0\r\nHost: x\r\n$hdr\r\n";
    local $/;
    my $raw = <$s>;
    my ($head, $body) = split /\r\n\r\n/, $raw // '', 2;
    my ($st) = ($head // '') =~ m{^HTTP/1\.\d (\d+)};
    return ($st, scalar(eval { JSON::PP->new->decode($body // '') }), $body);
}


sub stop_aggregator {
    my ($self, $sig) = @_;
    _stop_pid(delete $self->{pids}{aggregator}, $sig // 'TERM', 5);
}


sub admin_token { $_[0]{admin_token} }
sub metrics_token { $_[0]{metrics_token} }


sub stop_emulator {
    my ($self) = @_;
    _stop_pid(delete $self->{pids}{emulator}, 'TERM', 5);
}


sub _kill_all {
    my ($self) = @_;
    return if $self->{owner} != $$;
    $self->_redis_drop;
    $self->stop_nginx;
    $self->stop_second_nginx;
    $self->stop_aggregator;
    $self->stop_emulator;
    $self->stop_redis;
}


sub _remove_tmp {
    my ($self) = @_;
    return if $self->{owner} != $$ || !$self->{tmp};
    if ($ENV{CFCOST_TEST_KEEP}) {
        Test::More::diag("kept test dir: $self->{tmp}");
    } else {
        File::Path::remove_tree($self->{tmp});
    }
    delete $self->{tmp};
}


sub allow_error {
    my ($self, @re) = @_;
    push @{ $self->{allow} }, @re;
}


# For tests that provoke a configuration failure on purpose (a reload with
# a broken file): [emerg] lines matching these are not counted.  [alert]
# and [crit] are never allowed.
sub allow_emerg {
    my ($self, @re) = @_;
    push @{ $self->{allow_emerg} }, @re;
}


# An [alert] the test causes on purpose (a worker it kills, say).
sub allow_alert {
    my ($self, $re) = @_;
    push @{ $self->{allow_alert} }, $re;
}


sub error_log {
    my ($self) = @_;
    return _slurp("$self->{tmp}/error.log")
           . _slurp("$self->{tmp}/gw2/error.log");
}


sub error_log_tail {
    my ($self, $n) = @_;
    my @l = split /\n/, $self->error_log;
    $n //= 30;
    @l = @l[-$n .. -1] if @l > $n;
    return join("\n", @l) . "\n";
}


# Stops every child, then checks the error log: no [alert], [emerg] or
# [crit], and no [error] unless allowed.
sub done {
    my ($self) = @_;
    return if $self->{done}++;
    $self->_kill_all;

    my @lines = split /\n/, $self->error_log;
    my @bad = grep { /\[(alert|emerg|crit)\]/ } @lines;
    my @ae = @{ $self->{allow_emerg} || [] };
    @bad = grep { my $l = $_; !($l =~ /\[emerg\]/ && grep { $l =~ $_ } @ae) }
        @bad;
    my @aa = @{ $self->{allow_alert} || [] };
    @bad = grep { my $l = $_; !($l =~ /\[alert\]/ && grep { $l =~ $_ } @aa) }
        @bad;
    Test::More::ok(!@bad, 'error log: no [alert], [emerg] or [crit]')
        or Test::More::diag(join "\n", @bad[0 .. ($#bad > 19 ? 19 : $#bad)]);

    my @err;
    for my $l (grep { /\[error\]/ } @lines) {
        next if grep { $l =~ $_ } @{ $self->{allow} };
        push @err, $l;
    }
    Test::More::ok(!@err, 'error log: no unexpected [error]')
        or Test::More::diag(join "\n", @err[0 .. ($#err > 19 ? 19 : $#err)]);

    if ($SANITIZE) {
        # UBSan's messages are on stderr: nginx's (then its error log),
        # the aggregator's; so is an ASan report that missed its file
        my @ub;
        for my $f (qw(error.log nginx.out aggregator.log)) {
            push @ub, map { "$f: $_" }
                grep { /runtime error:|ERROR: (Address|Leak)Sanitizer/ }
                split /\n/, _slurp("$self->{tmp}/$f");
        }
        sanitizer_ok(@ub);
    }

    $self->_remove_tmp;
    delete $LIVE{"$self"};
}


# The report files in the CFCOST_SANITIZE directory.
sub _sanitizer_files {
    return () unless $SANITIZE;
    opendir my $d, $SANITIZE or return ();
    return sort map { "$SANITIZE/$_" } grep { /^(asan|ubsan)\./ } readdir $d;
}


# Under CFCOST_SANITIZE: one test, that no ASan/UBSan report appeared since
# this test file started (or since the last call), nor any of @ubsan (UBSan
# "runtime error:" or ASan lines from a log); prints them.  done() calls it
# with those of its processes' logs; a test that runs its processes without
# an env calls it itself.  Without CFCOST_SANITIZE: nothing.
sub sanitizer_ok {
    my (@ubsan) = @_;
    return 1 unless $SANITIZE;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my @new = grep { !$SAN_SEEN{$_}++ } _sanitizer_files();
    my $ok = Test::More::ok(!@new && !@ubsan,
        'no AddressSanitizer/UBSan report');
    Test::More::diag(join "\n", 'in the logs:', @ubsan) if @ubsan;
    for my $f (@new) {
        my $t = _slurp($f);
        $t = substr($t, 0, 20000) . "\n[...]\n" if length $t > 20000;
        Test::More::diag("$f:\n$t");
    }
    return $ok;
}


sub DESTROY {
    my ($self) = @_;
    return if !$self->{owner} || $self->{owner} != $$;
    $self->_kill_all;
    $self->_remove_tmp;
}


END {
    for my $env (values %LIVE) {
        next if $env->{owner} != $$;
        eval { $env->_kill_all; $env->_remove_tmp; };
    }
    %LIVE = ();
}


# Runs `nginx -t` on a configuration text (as render_conf makes).  Returns
# (exit code, combined output).
sub nginx_test_conf {
    my ($self, $text) = @_;
    my $t = $self->{tmp};
    my $n = ++$self->{test_conf_n};
    my $conf = "$t/test-$n.conf";
    $self->_write($conf, $text);
    my $out = "$t/test-$n.out";
    my $pid = $self->_spawn($out, undef,
        $NGINX, '-t', '-p', "$t/", '-c', $conf, '-e', "$t/test-$n.log");
    my $until = time + 30;
    my $rc;
    while (time < $until) {
        my $r = waitpid($pid, WNOHANG);
        if ($r == $pid) { $rc = $? >> 8; last; }
        sleep 0.02;
    }
    unless (defined $rc) {
        _stop_pid($pid, 'KILL', 1);
        return (-1, "nginx -t timed out\n" . _slurp($out));
    }
    return ($rc, _slurp($out));
}


# --------------------------------------------------------------------------
# HTTP

sub http {
    my ($self, $method, $path, %opt) = @_;
    my %h = %{ $opt{headers} || {} };
    my $body = $opt{body};
    if (ref $body eq 'HASH' || ref $body eq 'ARRAY') {
        $body = $JSON->encode($body);
        $h{'Content-Type'} //= 'application/json'
            unless grep { lc $_ eq 'content-type' } keys %h;
    }
    my $ua = HTTP::Tiny->new(
        keep_alive => 0,
        timeout    => $opt{timeout} // 30,
        agent      => 'cfcost-test/1',
    );
    my $url = "http://127.0.0.1:$self->{port}$path";
    my $res = $ua->request($method, $url, {
        headers => \%h,
        (defined $body ? (content => $body) : ()),
    });
    my %hdr = map { lc($_) => $res->{headers}{$_} } keys %{ $res->{headers} };
    my $r = {
        status  => $res->{status},
        reason  => $res->{reason},
        headers => \%hdr,
        body    => $res->{content} // '',
        json    => undef,
    };
    if (length $r->{body} && $r->{body} =~ /^\s*[\[{]/) {
        $r->{json} = eval { $JSON->decode($r->{body}) };
    }
    return $r;
}


# POST /api/ai/chat with a one-message conversation.
#   key, auth ('x-api-key' | 'bearer'), model, content, messages, extra
#   (hashref merged into the body), body (overrides everything), headers
sub chat {
    my ($self, %a) = @_;
    my %h = %{ $a{headers} || {} };
    if (defined $a{key}) {
        if (($a{auth} // 'x-api-key') eq 'bearer') {
            $h{Authorization} = "Bearer $a{key}";
        } else {
            $h{'X-API-Key'} = $a{key};
        }
    }
    my $body = $a{body};
    unless (defined $body) {
        $body = {
            model    => $a{model} // '@cf/meta/llama-3.1-8b-instruct',
            messages => $a{messages}
                // [{ role => 'user', content => $a{content} // 'Hello' }],
            %{ $a{extra} || {} },
        };
    }
    return $self->http('POST', $a{path} // '/api/ai/chat',
        headers => \%h, body => $body, timeout => $a{timeout});
}


# --------------------------------------------------------------------------
# Redis: a minimal RESP client

sub _redis_drop {
    my ($self) = @_;
    if ($self->{rsock}) {
        close $self->{rsock};
    }
    delete $self->{rsock};
    $self->{rbuf} = '';
}


sub _redis_sock {
    my ($self) = @_;
    return $self->{rsock} if $self->{rsock};
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $self->{redis_port}, Proto => 'tcp', Timeout => 2)
        or return;
    binmode $s;
    $s->autoflush(1);
    $self->{rsock} = $s;
    $self->{rbuf} = '';
    my $r = $self->redis('AUTH', 'default', $self->{redis_admin_pass});
    unless (defined $r && !ref $r && $r eq 'OK') {
        $self->_redis_drop;
        $! = 0;
        return;
    }
    return $self->{rsock};
}


# The credentials file of a role (gateway, aggregator, cli, admin), and
# its "user password" pair, for tests that talk to Redis as that role.
sub redis_auth_file { "$_[0]{tmp}/redis-$_[1].auth" }

sub redis_credentials {
    my ($self, $role) = @_;
    return split ' ', _slurp($self->redis_auth_file($role));
}


# Returns the decoded reply: a string, an integer, undef (nil), an arrayref,
# or {error => "..."} for a Redis error or an I/O failure.
sub redis {
    my ($self, @cmd) = @_;
    my $s = $self->_redis_sock
        or return { error => "connect 127.0.0.1:$self->{redis_port}: $!" };
    my $req = '*' . scalar(@cmd) . "\r\n";
    for my $a (@cmd) {
        my $b = "$a";
        utf8::encode($b) if utf8::is_utf8($b);
        $req .= '$' . length($b) . "\r\n$b\r\n";
    }
    my $off = 0;
    while ($off < length $req) {
        my $w = syswrite($s, $req, length($req) - $off, $off);
        unless (defined $w) {
            my $e = "$!";
            $self->_redis_drop;
            return { error => "write: $e" };
        }
        $off += $w;
    }
    my $deadline = time + 5;
    my $r = eval { $self->_resp_parse($deadline) };
    if ($@) {
        my $e = $@;
        $self->_redis_drop;
        chomp $e;
        return { error => $e };
    }
    return $r;
}


sub _resp_fill {
    my ($self, $deadline) = @_;
    my $s = $self->{rsock};
    my $sel = IO::Select->new($s);
    my $left = $deadline - time;
    die "redis read timeout\n" if $left <= 0;
    die "redis read timeout\n" unless $sel->can_read($left);
    my $n = sysread($s, my $buf, 65536);
    die "redis read: $!\n" unless defined $n;
    die "redis closed the connection\n" if $n == 0;
    $self->{rbuf} .= $buf;
}


sub _resp_line {
    my ($self, $deadline) = @_;
    my $i;
    while (($i = index($self->{rbuf}, "\r\n")) < 0) {
        $self->_resp_fill($deadline);
    }
    my $line = substr($self->{rbuf}, 0, $i);
    substr($self->{rbuf}, 0, $i + 2, '');
    return $line;
}


sub _resp_parse {
    my ($self, $deadline) = @_;
    my $line = $self->_resp_line($deadline);
    my $t = substr($line, 0, 1, '');
    return $line                 if $t eq '+';
    return { error => $line }    if $t eq '-';
    return 0 + $line             if $t eq ':';
    if ($t eq '$') {
        return undef if $line < 0;
        while (length($self->{rbuf}) < $line + 2) {
            $self->_resp_fill($deadline);
        }
        my $v = substr($self->{rbuf}, 0, $line);
        substr($self->{rbuf}, 0, $line + 2, '');
        return $v;
    }
    if ($t eq '*') {
        return undef if $line < 0;
        return [ map { $self->_resp_parse($deadline) } 1 .. $line ];
    }
    die "bad RESP reply type '$t'\n";
}


# --------------------------------------------------------------------------
# keys, records (via the CLI and Redis)

# Runs build/cfcost against this env's Redis.  Returns (exit code, stdout,
# stderr).
sub cli {
    my ($self, @args) = @_;
    my $t = $self->{tmp};
    my $n = ++$self->{cli_n};
    my ($out, $err) = ("$t/cli-$n.out", "$t/cli-$n.err");
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out or POSIX::_exit(126);
        open STDERR, '>', $err or POSIX::_exit(126);
        $ENV{CFCOST_REDIS} = $self->redis_addr;
        $ENV{CFCOST_VAR}   = $t;
        my @cmd = ($CLI, '--redis', $self->redis_addr, @args);
        { no warnings q(exec); exec { $cmd[0] } @cmd; }
        print STDERR "exec $CLI: $!\n";
        POSIX::_exit(127);
    }
    my $until = time + 30;
    my $rc;
    while (time < $until) {
        my $r = waitpid($pid, WNOHANG);
        if ($r == $pid) { $rc = $? >> 8; last; }
        sleep 0.02;
    }
    unless (defined $rc) {
        _stop_pid($pid, 'KILL', 1);
        $rc = -1;
    }
    return ($rc, _slurp($out), _slurp($err));
}


# Creates a key with the CLI; returns {key, id, user}.
sub create_key {
    my ($self, %a) = @_;
    my $user = $a{user} // 'alice';
    my @args = ('keys', 'create', '--user', $user);
    push @args, '--name', $a{name} if defined $a{name};
    my ($rc, $out, $err) = $self->cli(@args);
    die "cfcost keys create failed (exit $rc):\n$out$err" if $rc != 0;
    my @lines = grep { length } map { s/\s+$//r } split /\n/, $out;
    my $key = $lines[-1] // '';
    $key =~ s/^\s+//;
    die "cfcost keys create: no key on the last stdout line:\n$out$err"
        unless length $key;
    my $hash = sha256_hex($key);
    my $id;
    my $idx = $self->redis('HGETALL', 'cfcost:keys');
    if (ref $idx eq 'ARRAY') {
        my %m = @$idx;
        ($id) = grep { $m{$_} eq $hash } keys %m;
    }
    unless (defined $id) {
        my $h = $self->redis('HGET', "cfcost:key:$hash", 'id');
        $id = $h if defined $h && !ref $h;
    }
    ($id) = $out =~ /\b(key_[A-Za-z0-9_-]+)/ unless defined $id;
    die "cfcost keys create: cannot find the key id:\n$out$err"
        unless defined $id;
    return { key => $key, id => $id, user => $user, hash => $hash };
}


sub revoke_key {
    my ($self, $id) = @_;
    my ($rc, $out, $err) = $self->cli('keys', 'revoke', $id);
    die "cfcost keys revoke $id failed (exit $rc):\n$out$err" if $rc != 0;
    return 1;
}


# The record streams, one per gateway writer (cfcost_schema.h).
sub record_streams {
    my ($self) = @_;
    my $w = $self->redis('SMEMBERS', 'cfcost:writers');
    return [] unless ref $w eq 'ARRAY';
    return [ map { "cfcost:rec:{$_}" } sort @$w ];
}


# The fields of a schema 2 record, in the order of cfcost_packed_e
# (common/cfcost_schema.h): its one field "r" holds them as netstrings.
our @PACKED = qw(v request_id ts_ms key_id user model model_asked route
    status upstream_status input_tokens output_tokens cached_tokens
    cost_pusd price_input price_output price_cached pricing_version
    latency_us flags error neurons);

# An entry's field/value list as a hash: schema 1's pairs, or schema 2's
# packed field unpacked (an empty model_asked left out, as schema 1 did);
# a packed value that is not netstrings dies.
sub record_fields {
    my (@kv) = @_;
    return {@kv} unless @kv == 2 && $kv[0] eq 'r';
    my %h;
    my @f = netstrings($kv[1]);
    my $last = $#f < $#PACKED ? $#f : $#PACKED;
    @h{ @PACKED[0 .. $last] } = @f[0 .. $last];
    delete $h{model_asked} if defined $h{model_asked} && $h{model_asked} eq '';
    return \%h;
}

# The netstrings of a value, in order; dies when it is not netstrings.
sub netstrings {
    my ($v) = @_;
    my @f;
    while (length $v) {
        $v =~ s/^(\d+)://s or die "not a netstring: $v\n";
        my $n = $1;
        length($v) > $n && substr($v, $n, 1) eq ','
            or die "not a netstring: $v\n";
        push @f, substr($v, 0, $n);
        $v = substr($v, $n + 1);
    }
    return @f;
}

# The records of an entry's field/value list, each a hash: one, or a
# batch entry's (field "b": each record packed, as a netstring).
sub entry_records {
    my (@kv) = @_;
    return (record_fields(@kv)) unless @kv == 2 && $kv[0] eq 'b';
    return map { record_fields('r', $_) } netstrings($kv[1]);
}


# All records of every writer, oldest first (by ts_ms, then stream and
# entry id), each a hashref (plus _id and _stream).
sub records {
    my ($self) = @_;
    my @out;
    for my $s (@{ $self->record_streams }) {
        my $r = $self->redis('XRANGE', $s, '-', '+');
        die "XRANGE failed: $r->{error}" if ref $r eq 'HASH';
        next unless ref $r eq 'ARRAY';
        for my $e (@$r) {
            my ($id, $fields) = @$e;
            my $k = 0;
            for my $rec (entry_records(@{ $fields || [] })) {
                my %h = %$rec;
                # record k of a batch entry: "<id>.<k>" (cfcost_schema.h)
                $h{_id} = $k ? "$id.$k" : $id;
                $h{_entry} = $id;
                $h{_stream} = $s;
                push @out, \%h;
                $k++;
            }
        }
    }
    my $ms = sub { my ($a) = $_[0] =~ /^(\d+)/; $a // 0 };
    return [ sort {
        ($a->{ts_ms} // 0) <=> ($b->{ts_ms} // 0)
            || $a->{_stream} cmp $b->{_stream}
            || $ms->($a->{_id}) <=> $ms->($b->{_id})
            || $a->{_id} cmp $b->{_id}
    } @out ];
}


# Records in every writer's stream (-1 when Redis does not answer): an
# entry holds one, a batch entry several (cfcost_schema.h).
our $COUNT_LUA;

sub record_count {
    my ($self) = @_;
    $COUNT_LUA //= _slurp("$ROOT/scripts/count-records.lua");
    my $n = 0;
    for my $s (@{ $self->record_streams }) {
        my $from = '-';
        while (1) {
            my $r = $self->redis('EVAL', $COUNT_LUA, 1, $s, $from);
            return -1 unless ref $r eq 'ARRAY';
            $n += $r->[0];
            $from = $r->[1];
            last if $r->[2];
        }
    }
    return $n;
}



# Polls until the stream holds at least $n records or $timeout s pass;
# returns the records either way.
sub wait_records {
    my ($self, $n, $timeout) = @_;
    my $until = time + ($timeout // 5);
    while (1) {
        my $c = $self->record_count;
        return $self->records if $c >= $n;
        last if time >= $until;
        sleep 0.05;
    }
    return $self->records;
}


# Waits for the record with this request id (from X-Cfcost-Request-Id).
sub wait_record {
    my ($self, $request_id, $timeout) = @_;
    my $until = time + ($timeout // 5);
    while (1) {
        my ($r) = grep { ($_->{request_id} // '') eq $request_id }
            @{ $self->records };
        return $r if $r;
        return undef if time >= $until;
        sleep 0.05;
    }
}


# --------------------------------------------------------------------------
# the emulator's request log

sub _emu {
    my ($self, $method) = @_;
    my $ua = HTTP::Tiny->new(keep_alive => 0, timeout => 10);
    my $res = $ua->request($method,
        "http://127.0.0.1:$self->{emu_port}/_emu/requests");
    die "emulator $method /_emu/requests: $res->{status} $res->{content}"
        unless $res->{success};
    return $res->{content};
}


# Requests the emulator received since the last clear: arrayref of
# {method, path, headers (lowercase), body}.
sub emu_requests {
    my ($self) = @_;
    my $c = $self->_emu('GET');
    return JSON::PP->new->utf8->decode($c);
}


sub emu_clear {
    my ($self) = @_;
    $self->_emu('DELETE');
    return 1;
}


# --------------------------------------------------------------------------
# data-driven cases
#
# A case is a hashref:
#   name      label for every assertion
#   chat      hashref of chat() arguments            } one of these
#   http      [METHOD, PATH, %http_options]          }
#   status    expected HTTP status
#   detail    for errors: a regex (or string) the JSON "detail" must match;
#             any status >= 400 is checked to be JSON {"detail": string}
#   json      {field => expected} on the decoded body (see match())
#   headers   {lowercase-name => expected}; undef expects the header absent
#   upstream  'none' (the emulator got nothing), or a code ref called with
#             (arrayref of emulator requests, response), or a hashref:
#             {path, headers => {name => expected|undef}, body => structure
#             compared to the decoded upstream body, raw_body => the
#             bytes it must be exactly}
#   record    'none' (no record appears), or {field => expected}: exactly one
#             new record must appear
#
# Expected values: a Regexp must match; a CODE ref gets (value, response)
# and returns true; undef means undefined/absent; anything else is compared
# as a string.  Returns (response, record or undef).

sub match {
    my ($got, $exp, $name, $res) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    if (!defined $exp) {
        my $ok = Test::More::ok(!defined $got, "$name: absent/null");
        Test::More::diag("got: " . _show($got)) unless $ok;
        return $ok;
    }
    if (ref $exp eq 'Regexp') {
        return Test::More::like($got // '', $exp, $name);
    }
    if (ref $exp eq 'CODE') {
        my $ok = Test::More::ok($exp->($got, $res), $name);
        Test::More::diag("got: " . _show($got)) unless $ok;
        return $ok;
    }
    if (ref $exp) {
        return Test::More::is_deeply($got, $exp, $name);
    }
    return Test::More::is(defined $got && ref $got ? _show($got) : $got,
        $exp, $name);
}


sub _show {
    my ($v) = @_;
    return 'undef' unless defined $v;
    return ref $v ? JSON::PP->new->canonical->allow_nonref->allow_blessed
        ->convert_blessed->encode($v) : "'$v'";
}


sub check_fields {
    my ($got, $exp, $name, $res) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    unless (ref $got eq 'HASH') {
        Test::More::fail("$name: is an object");
        Test::More::diag("got: " . _show($got));
        return;
    }
    for my $f (sort keys %$exp) {
        match($got->{$f}, $exp->{$f}, "$name: $f", $res);
    }
}


sub run_case {
    my ($self, $c) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $name = $c->{name} // 'case';

    $self->emu_clear if $c->{upstream};
    my %before;
    if ($c->{record}) {
        %before = map { $_->{_id} => 1 } @{ $self->records };
    }

    my $res;
    if ($c->{chat}) {
        $res = $self->chat(%{ $c->{chat} });
    } elsif ($c->{http}) {
        my ($m, $p, @o) = @{ $c->{http} };
        $res = $self->http($m, $p, @o);
    } else {
        die "case $name: no chat nor http request";
    }

    if (defined $c->{status}) {
        Test::More::is($res->{status}, $c->{status}, "$name: status")
            or Test::More::diag("body: " . substr($res->{body}, 0, 500));
    }
    if (($c->{status} // 0) >= 400 || defined $c->{detail}) {
        my $d = ref $res->{json} eq 'HASH' ? $res->{json}{detail} : undef;
        Test::More::ok(defined $d && !ref $d && length $d,
            "$name: JSON body with a detail string")
            or Test::More::diag("body: " . substr($res->{body}, 0, 500));
        if (defined $c->{detail}) {
            my $re = ref $c->{detail} ? $c->{detail}
                : qr/\Q$c->{detail}\E/;
            Test::More::like($d // '', $re, "$name: detail");
        }
        match($res->{headers}{'content-type'}, qr{^application/json},
            "$name: error content-type");
    }
    check_fields($res->{json}, $c->{json}, "$name: body", $res)
        if $c->{json};
    if ($c->{headers}) {
        for my $h (sort keys %{ $c->{headers} }) {
            match($res->{headers}{lc $h}, $c->{headers}{$h},
                "$name: header $h", $res);
        }
    }

    if (my $u = $c->{upstream}) {
        my $reqs = $self->emu_requests;
        if (!ref $u && $u eq 'none') {
            Test::More::is(scalar @$reqs, 0,
                "$name: the upstream received no request")
                or Test::More::diag(_show($reqs));
        } elsif (ref $u eq 'CODE') {
            $u->($reqs, $res);
        } else {
            Test::More::is(scalar @$reqs, $u->{count} // 1,
                "$name: upstream request count");
            my $q = $reqs->[-1] || {};
            match($q->{path}, $u->{path}, "$name: upstream path")
                if exists $u->{path};
            match($q->{method}, $u->{method} // 'POST',
                "$name: upstream method");
            for my $h (sort keys %{ $u->{headers} || {} }) {
                match($q->{headers}{lc $h}, $u->{headers}{$h},
                    "$name: upstream header $h");
            }
            if (exists $u->{body}) {
                my $b = decode_json_text(
                    do { my $t = $q->{body} // ''; utf8::encode($t); $t });
                match($b, $u->{body}, "$name: upstream body");
            }
            if (exists $u->{raw_body}) {
                my $t = $q->{body} // '';
                utf8::encode($t);
                Test::More::is($t, $u->{raw_body},
                    "$name: upstream body, byte for byte");
            }
        }
    }

    my $rec;
    if (my $r = $c->{record}) {
        if (!ref $r && $r eq 'none') {
            # give an asynchronous writer time to show itself
            sleep 0.5;
            my @new = grep { !$before{$_->{_id}} } @{ $self->records };
            Test::More::is(scalar @new, 0, "$name: no record")
                or Test::More::diag(_show(\@new));
        } else {
            my @new;
            my $until = time + ($c->{record_timeout} // 5);
            while (1) {
                @new = grep { !$before{$_->{_id}} } @{ $self->records };
                last if @new || time >= $until;
                sleep 0.05;
            }
            sleep 0.2 if @new;
            @new = grep { !$before{$_->{_id}} } @{ $self->records };
            Test::More::is(scalar @new, 1, "$name: exactly one new record")
                or Test::More::diag(_show(\@new));
            $rec = $new[0];
            check_fields($rec, $r, "$name: record", $res) if $rec;
        }
    }
    return ($res, $rec);
}


# --------------------------------------------------------------------------
# helpers for tests

sub json { $JSON }

sub decode_json_text {
    my ($text) = @_;
    return eval { JSON::PP->new->utf8->decode($text) };
}


1;
