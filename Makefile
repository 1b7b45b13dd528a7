# The two commands a newcomer needs are `make run` and `make test`; see README.md.

SOURCES := config $(wildcard ngx_chat_module/*.[ch] ngx_chat_module/*/*.[ch] \
                             ngx_asset_module/*.[ch] \
                             common/*.[ch])

.PHONY: all modules run test deps clean fuzz fuzz-repro fuzz-smoke

all: modules

modules: build/modules/ngx_chat_module.so

build/modules/ngx_chat_module.so: $(SOURCES) scripts/build.sh
	scripts/build.sh

deps:
	scripts/deps.sh

run: deps
	$(MAKE) modules
	scripts/run.sh

test: deps
	$(MAKE) modules
	scripts/test.sh

# libFuzzer targets (docs/fuzzing.md): FUZZ_SECONDS each, default 60
fuzz: modules
	scripts/fuzz.sh run

# the saved crashes and the regression inputs, through their targets
fuzz-repro: modules
	scripts/fuzz.sh repro

# every target 10 s and the regression inputs, as prove tests (.ci/run)
fuzz-smoke: modules
	prove fuzz/smoke.t

clean:
	rm -rf build
