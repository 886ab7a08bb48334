# cfcost: the two commands a newcomer needs are `make run` and `make test`.
# Each installs what is missing (Debian packages) and builds what it needs.

SHELL    := /bin/bash
CC       ?= gcc
CFLAGS   ?= -std=c99 -O2 -g -Wall -Wextra -Werror -D_DEFAULT_SOURCE
CPPFLAGS += -Icommon
LIBS      = -lhiredis -ljansson -lcrypto -lm

COMMON_SRC = common/cfcost_price.c common/cfcost_usage.c common/cfcost_sse.c \
             common/cfcost_json.c \
             common/cfcost_addr.c common/cfcost_keys.c common/cfcost_models.c \
             common/cfcost_estimate.c
COMMON_HDR = common/cfcost_price.h common/cfcost_usage.h common/cfcost_sse.h common/cfcost_schema.h \
             common/cfcost_json.h \
             common/cfcost_addr.h common/cfcost_keys.h common/cfcost_models.h \
             common/cfcost_estimate.h
MODULE_SRC = $(wildcard ngx_http_cfcost_module/*.c ngx_http_cfcost_module/*.h)
AGG_SRC    = $(wildcard aggregator/*.c)
AGG_HDR    = $(wildcard aggregator/*.h)
UNIT_TESTS = $(patsubst t/unit/%.c,build/unit/%.t,$(wildcard t/unit/test_*.c)) \
             build/unit/fuzz_sse.t

.PHONY: all deps module unit test run clean bench deps-graph

all: deps build/ngx_http_cfcost_module.so build/cfcost build/cfcost-aggregator \
     $(UNIT_TESTS)

deps:
	@scripts/deps.sh

build/ngx_http_cfcost_module.so: config $(MODULE_SRC) $(COMMON_SRC) $(COMMON_HDR)
	@mkdir -p build
	scripts/build-module.sh

module: build/ngx_http_cfcost_module.so

build/cfcost: $(wildcard cli/*.c cli/*.h) $(COMMON_SRC) $(COMMON_HDR)
	@mkdir -p build
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $(wildcard cli/*.c) $(COMMON_SRC) $(LIBS)

AGG_COMMON = common/cfcost_price.c common/cfcost_addr.c common/cfcost_json.c
build/cfcost-aggregator: $(AGG_SRC) $(AGG_HDR) $(AGG_COMMON) $(COMMON_HDR)
	@mkdir -p build
	$(CC) $(CPPFLAGS) -Iaggregator $(CFLAGS) -o $@ $(AGG_SRC) $(AGG_COMMON) \
	    -levent -lhiredis -ljansson -lcrypto -lm

# the rollup unit test includes the aggregator's pure sources itself
build/unit/test_rollup.t: $(AGG_SRC) $(AGG_HDR)

# the consumer against a scripted Redis: linked without _main.c, and with
# the fake (t/unit/fake_redis.c) and the test's clock for _redis.c, _clock.c
CONSUMER_TEST_SRC = aggregator/cfcost_agg_consumer.c \
                    aggregator/cfcost_agg_consumer_read.c \
                    aggregator/cfcost_agg_consumer_trim.c \
                    aggregator/cfcost_agg_consumer_fail.c \
                    aggregator/cfcost_agg_consumer_batch.c \
                    aggregator/cfcost_agg_consumer_streams.c \
                    aggregator/cfcost_agg_lua.c \
                    aggregator/cfcost_agg_record.c aggregator/cfcost_agg_util.c \
                    aggregator/cfcost_agg_log.c t/unit/fake_redis.c
build/unit/test_consumer.t: t/unit/test_consumer.c t/unit/tap.h t/unit/fake_redis.h \
                            $(CONSUMER_TEST_SRC) $(AGG_HDR) $(COMMON_HDR)
	@mkdir -p build/unit
	$(CC) $(CPPFLAGS) -Iaggregator $(CFLAGS) -o $@ $< $(CONSUMER_TEST_SRC) \
	    -levent $(LIBS)

build/unit/%.t: t/unit/%.c t/unit/tap.h $(COMMON_SRC) $(COMMON_HDR)
	@mkdir -p build/unit
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(COMMON_SRC) $(LIBS)

# the libFuzzer target runs as a fixed-seed random loop without clang
build/unit/fuzz_sse.t: t/unit/fuzz_sse.c common/cfcost_sse.c common/cfcost_sse.h
	@mkdir -p build/unit
	$(CC) $(CPPFLAGS) $(CFLAGS) -DCFCOST_FUZZ_MAIN -o $@ $< common/cfcost_sse.c

unit: all
	prove --exec '' $(UNIT_TESTS) :: $(CURDIR)/conf/pricing.json

test: all
	prove --exec '' $(UNIT_TESTS) :: $(CURDIR)/conf/pricing.json
	prove -r t/

run: all
	scripts/run.sh

# throughput and latency against plain proxy_pass, in the same run; see
# bench/run.sh for BENCH_ROUNDS, BENCH_DURATION, BENCH_TINY, BENCH_BIG
bench: all
	bench/run.sh

# which .c file calls which, per part, and any cycle (exit 1)
deps-graph:
	@scripts/deps-graph.py

clean:
	rm -rf build
