# surat — build, run, test, fuzz, bench.
#   make          build/surat (optimised, with debug info)
#   make run      install deps, build, start a development instance in ./var
#   make test     install deps, build with ASan+UBSan, run unit and integration tests
#   make fuzz     build the libFuzzer targets with clang and run each for FUZZ_TIME seconds
#   make bench    run the benchmarks against Postfix/Dovecot on loopback

CC      ?= cc
PKGS    := libevent_core libevent_openssl libevent_pthreads libevent_extra openssl sqlite3 \
           libcrypt libunbound jansson libidn2 libidn
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN    := -Wall -Wextra -Werror -Wformat=2 -Wshadow -Wno-unused-parameter \
           -Wmissing-prototypes -Wstrict-prototypes -Wvla -Wpointer-arith
CFLAGS_COMMON := -std=gnu17 -D_GNU_SOURCE -Isrc $(WARN) $(PKG_CFLAGS) -MMD -MP
# libunistring (NFC of local parts) has no .pc file on Debian 12.
LIBS    := $(PKG_LIBS) -lunistring -lpthread -lm

SRCS    := $(shell find src -name '*.c' | sort)
LIBSRCS := $(filter-out src/cli/main.c,$(SRCS))
UNIT_SRCS := $(sort $(wildcard tests/unit/test_*.c))
FUZZ_SRCS := $(sort $(wildcard tests/fuzz/fuzz_*.c))

# Release build
REL_DIR := build/obj
REL_CFLAGS := $(CFLAGS_COMMON) -O2 -g -fstack-protector-strong -D_FORTIFY_SOURCE=2
REL_OBJS := $(SRCS:%.c=$(REL_DIR)/%.o)

# Sanitizer build for tests
SAN_DIR := build/asan
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
SAN_CFLAGS := $(CFLAGS_COMMON) -O1 -g $(SAN_FLAGS)
SAN_OBJS := $(SRCS:%.c=$(SAN_DIR)/%.o)
SAN_LIBOBJS := $(LIBSRCS:%.c=$(SAN_DIR)/%.o)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(SAN_DIR)/unit/%)

# Fuzz build (clang only)
FUZZ_CC := clang
FUZZ_DIR := build/fuzz
FUZZ_CFLAGS := -std=gnu17 -D_GNU_SOURCE -Isrc $(PKG_CFLAGS) -O1 -g -MMD -MP \
               -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
FUZZ_LIBOBJS := $(LIBSRCS:%.c=$(FUZZ_DIR)/%.o)
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(FUZZ_DIR)/bin/%)
FUZZ_TIME ?= 20

PYTEST := /usr/bin/python3 -m pytest

.PHONY: all deps run test unit fuzz soak bench clean format
# Keep the clang objects of the fuzz build between runs.
.SECONDARY:

all: build/surat

deps:
	@./scripts/deps.sh

build/surat: $(REL_OBJS)
	@echo "  LD      $@"
	@$(CC) -o $@ $(REL_OBJS) $(LIBS)

$(REL_DIR)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(REL_CFLAGS) -c -o $@ $<

build/asan/surat: $(SAN_OBJS)
	@echo "  LD asan $@"
	@$(CC) $(SAN_FLAGS) -o $@ $(SAN_OBJS) $(LIBS)

$(SAN_DIR)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC asan $<"
	@$(CC) $(SAN_CFLAGS) -c -o $@ $<

$(SAN_DIR)/unit/%: tests/unit/%.c $(SAN_LIBOBJS)
	@mkdir -p $(dir $@)
	@echo "  LD unit $@"
	@$(CC) $(SAN_CFLAGS) -o $@ $< $(SAN_LIBOBJS) $(LIBS) -lcmocka

run: deps
	@$(MAKE) --no-print-directory build/surat
	@./scripts/run-dev.sh

unit: $(UNIT_BINS)
	@./scripts/run-unit.sh $(UNIT_BINS)

# The build in parallel, unless the caller's make already shares its jobs.
NPROC := $(shell nproc 2>/dev/null || echo 2)
SUBJOBS = $(if $(findstring --jobserver,$(MAKEFLAGS)),,-j$(NPROC))
# Integration tests run in TEST_JOBS pytest-xdist workers, each with its own
# daemons and ports (tests/integration/ports.py); TEST_JOBS=1 runs them in order.
TEST_JOBS ?= $(NPROC)

test: deps
	@$(MAKE) --no-print-directory $(SUBJOBS) build/asan/surat $(UNIT_BINS)
	@./scripts/run-unit.sh $(UNIT_BINS)
	SURAT_BIN=$(CURDIR)/build/asan/surat $(PYTEST) -q $(if $(filter-out 1,$(TEST_JOBS)),-n $(TEST_JOBS)) tests/integration

$(FUZZ_DIR)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC fuzz $<"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<

$(FUZZ_DIR)/bin/%: tests/fuzz/%.c $(FUZZ_LIBOBJS)
	@mkdir -p $(dir $@)
	@echo "  LD fuzz $@"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_LIBOBJS) $(LIBS)

fuzz: deps
	@$(MAKE) --no-print-directory $(FUZZ_BINS)
	@./scripts/run-fuzz.sh $(FUZZ_TIME) $(FUZZ_BINS)

# Kill-and-restart cycles under mixed load (minutes; not in `make test`).
soak: deps
	@$(MAKE) --no-print-directory $(SUBJOBS) build/asan/surat
	SURAT_BIN=$(CURDIR)/build/asan/surat /usr/bin/python3 tests/soak/crash_soak.py

bench: deps
	@$(MAKE) --no-print-directory build/surat
	@./bench/run.sh

format:
	clang-format -i $(SRCS) $(wildcard src/*/*.h) $(UNIT_SRCS) $(FUZZ_SRCS)

clean:
	rm -rf build

-include $(REL_OBJS:.o=.d) $(SAN_OBJS:.o=.d) $(FUZZ_LIBOBJS:.o=.d)
