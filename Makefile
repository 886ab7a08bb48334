# cfcost: the two commands a newcomer needs are `make run` and `make test`.
# Each installs what is missing (Debian packages) and builds what it needs.

SHELL    := /bin/bash
CC       ?= gcc
CFLAGS   ?= -std=c99 -O2 -g -Wall -Wextra -Werror -D_DEFAULT_SOURCE
CPPFLAGS += -Icommon
LIBS      = -lhiredis -ljansson -lcrypto -lm

COMMON_SRC = common/cfcost_price.c common/cfcost_usage.c common/cfcost_sse.c \
             common/cfcost_json.c common/cfcost_request.c \
             common/cfcost_addr.c common/cfcost_keys.c common/cfcost_models.c \
             common/cfcost_estimate.c common/cfcost_redis_auth.c \
             common/cfcost_reply.c
COMMON_HDR = common/cfcost_price.h common/cfcost_usage.h common/cfcost_sse.h common/cfcost_schema.h \
             common/cfcost_json.h common/cfcost_request.h \
             common/cfcost_addr.h common/cfcost_keys.h common/cfcost_models.h \
             common/cfcost_estimate.h common/cfcost_redis_auth.h \
             common/cfcost_reply.h
MODULE_SRC = $(wildcard ngx_http_cfcost_module/*.c ngx_http_cfcost_module/*.h)
AGG_SRC    = $(wildcard aggregator/*.c)
AGG_HDR    = $(wildcard aggregator/*.h)
# where everything is built: build/, or build/asan for test-sanitize (which
# runs this Makefile again with B=build/asan and the sanitizer options)
B          = build
UNIT_TESTS = $(patsubst t/unit/%.c,$(B)/unit/%.t,$(wildcard t/unit/test_*.c)) \
             $(B)/unit/fuzz_sse.t $(B)/unit/fuzz_usage.t
ARTIFACTS  = $(B)/ngx_http_cfcost_module.so $(B)/cfcost $(B)/cfcost-aggregator \
             $(UNIT_TESTS)
# extra compiler and linker options for the module (scripts/build-module.sh)
MODULE_CC_OPT =
MODULE_LD_OPT =

.PHONY: all artifacts deps module unit test test-sanitize run clean bench \
        deps-graph

all: deps $(ARTIFACTS)

artifacts: $(ARTIFACTS)

deps:
	@scripts/deps.sh

$(B)/ngx_http_cfcost_module.so: config $(MODULE_SRC) $(COMMON_SRC) $(COMMON_HDR)
	@mkdir -p $(B)
	scripts/build-module.sh --out $(B) --cc-opt '$(MODULE_CC_OPT)' \
	    --ld-opt '$(MODULE_LD_OPT)'

module: $(B)/ngx_http_cfcost_module.so

$(B)/cfcost: $(wildcard cli/*.c cli/*.h) $(COMMON_SRC) $(COMMON_HDR)
	@mkdir -p $(B)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $(wildcard cli/*.c) $(COMMON_SRC) $(LIBS)

AGG_COMMON = common/cfcost_price.c common/cfcost_addr.c common/cfcost_json.c \
             common/cfcost_reply.c \
             common/cfcost_redis_auth.c
$(B)/cfcost-aggregator: $(AGG_SRC) $(AGG_HDR) $(AGG_COMMON) $(COMMON_HDR)
	@mkdir -p $(B)
	$(CC) $(CPPFLAGS) -Iaggregator $(CFLAGS) -o $@ $(AGG_SRC) $(AGG_COMMON) \
	    -levent -lhiredis -ljansson -lcrypto -lm

# the rollup unit test includes the aggregator's pure sources itself
$(B)/unit/test_rollup.t: $(AGG_SRC) $(AGG_HDR)

# the consumer against a scripted Redis: linked without _main.c, and with
# the fake (t/unit/fake_redis.c) and the test's clock for _redis.c, _clock.c
CONSUMER_TEST_SRC = aggregator/cfcost_agg_consumer.c \
                    aggregator/cfcost_agg_consumer_read.c \
                    aggregator/cfcost_agg_consumer_trim.c \
                    aggregator/cfcost_agg_consumer_fail.c \
                    aggregator/cfcost_agg_consumer_batch.c \
                    aggregator/cfcost_agg_consumer_sum.c \
                    aggregator/cfcost_agg_consumer_streams.c \
                    aggregator/cfcost_agg_lua.c \
                    aggregator/cfcost_agg_record.c aggregator/cfcost_agg_util.c \
                    aggregator/cfcost_agg_log.c t/unit/fake_redis.c \
                    common/cfcost_price.c
$(B)/unit/test_consumer.t: t/unit/test_consumer.c t/unit/tap.h t/unit/fake_redis.h \
                           $(CONSUMER_TEST_SRC) $(AGG_HDR) $(COMMON_HDR)
	@mkdir -p $(B)/unit
	$(CC) $(CPPFLAGS) -Iaggregator $(CFLAGS) -o $@ $< $(CONSUMER_TEST_SRC) \
	    -levent $(LIBS)

$(B)/unit/%.t: t/unit/%.c t/unit/tap.h $(COMMON_SRC) $(COMMON_HDR)
	@mkdir -p $(B)/unit
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(COMMON_SRC) $(LIBS)

# the libFuzzer target runs as a fixed-seed random loop without clang
$(B)/unit/fuzz_sse.t: t/unit/fuzz_sse.c common/cfcost_sse.c common/cfcost_sse.h
	@mkdir -p $(B)/unit
	$(CC) $(CPPFLAGS) $(CFLAGS) -DCFCOST_FUZZ_MAIN -o $@ $< common/cfcost_sse.c

# the same for the readers of upstream answers; the corpus is read from
# t/unit/usage-corpus at run time
FUZZ_USAGE_SRC = common/cfcost_usage.c common/cfcost_json.c \
                 common/cfcost_estimate.c
$(B)/unit/fuzz_usage.t: t/unit/fuzz_usage.c t/unit/tap.h $(FUZZ_USAGE_SRC) \
                        $(COMMON_HDR)
	@mkdir -p $(B)/unit
	$(CC) $(CPPFLAGS) $(CFLAGS) -DCFCOST_FUZZ_MAIN -o $@ $< \
	    $(FUZZ_USAGE_SRC) -ljansson -lm

unit: all
	prove --exec '' $(UNIT_TESTS) :: $(CURDIR)/conf/pricing.json

test: all
	prove --exec '' $(UNIT_TESTS) :: $(CURDIR)/conf/pricing.json
	prove -r t/

# The same tests against binaries built with AddressSanitizer and UBSan in
# build/asan (build/ is not touched): the unit tests, the CLI and the
# aggregator with leak detection; the module loaded into Debian's nginx with
# the ASan runtime preloaded (scripts/sanitized-nginx), without leak
# detection.  A report fails the test that caused it (t/lib/CfcostTest.pm
# checks build/asan/reports and the logs), then this target.  All of t/*.t
# but t/300-bench-smoke.t: it checks bench/run.sh and its numbers, which
# mean nothing under ASan, and exercises nothing the others do not.
# -Wno-maybe-uninitialized: at -O1 with the sanitizers gcc 12 warns about
# cli/redis.c's env, which is only read when it was set; the plain build
# keeps the warning.
SAN_CC   = -fsanitize=address,undefined -fno-omit-frame-pointer -g -O1
SAN_LD   = -fsanitize=address,undefined
SAN_B    = build/asan
SAN_LOGS = $(CURDIR)/$(SAN_B)/reports
SAN_UNIT = $(patsubst t/unit/%.c,$(SAN_B)/unit/%.t,\
             $(wildcard t/unit/test_*.c)) $(SAN_B)/unit/fuzz_sse.t \
             $(SAN_B)/unit/fuzz_usage.t
SAN_T    = $(filter-out t/300-bench-smoke.t,$(wildcard t/*.t))

test-sanitize: deps
	$(MAKE) --no-print-directory B=$(SAN_B) \
	    CFLAGS='$(CFLAGS) $(SAN_CC) -Wno-maybe-uninitialized' \
	    MODULE_CC_OPT='$(SAN_CC)' MODULE_LD_OPT='$(SAN_LD)' \
	    artifacts $(SAN_B)/ubsan-options.so
	rm -rf $(SAN_LOGS)
	ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 \
	UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1 \
	    prove --exec '' $(SAN_UNIT) :: $(CURDIR)/conf/pricing.json
	CFCOST_BUILD=$(SAN_B) CFCOST_SANITIZE=$(SAN_LOGS) prove $(SAN_T)
	@if ls $(SAN_LOGS)/* >/dev/null 2>&1; then \
	    echo "test-sanitize: sanitizer reports in $(SAN_LOGS):" >&2; \
	    ls -l $(SAN_LOGS) >&2; exit 1; fi

run: all
	scripts/run.sh

# throughput and latency against plain proxy_pass, in the same run; see
# bench/run.sh for BENCH_ROUNDS, BENCH_DURATION, BENCH_TINY, BENCH_BIG
bench: all
	bench/run.sh

# which .c file calls which, per part, and any cycle (exit 1)
deps-graph:
	@scripts/deps-graph.py

# preloaded into nginx by scripts/sanitized-nginx: UBSAN_OPTIONS for the
# workers (see the source); not sanitized itself
$(B)/ubsan-options.so: scripts/sanitized-nginx-ubsan.c
	@mkdir -p $(B)
	$(CC) -std=c99 -O2 -g -Wall -Wextra -Werror -shared -fPIC -o $@ $<

clean:
	rm -rf build
