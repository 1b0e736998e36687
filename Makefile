# make bench: measure Tollgate against Redis's ceiling and its peers, and
# rewrite docs/BENCHMARKS.md (about 15 minutes; needs redis-server,
# redis-benchmark, wrk and a MariaDB at 127.0.0.1:3306). Pass flags with
# BENCHFLAGS, e.g. make bench BENCHFLAGS=-quick.
.PHONY: bench
bench:
	cd bench && go run . $(BENCHFLAGS)
