# The two commands a newcomer needs are `make run` and `make test`; see README.md.

SOURCES := config $(wildcard ngx_chat_module/*.[ch] ngx_chat_module/*/*.[ch] \
                             ngx_asset_module/*.[ch] \
                             common/*.[ch])

.PHONY: all modules run test deps clean

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

clean:
	rm -rf build
