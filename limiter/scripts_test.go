package limiter

import (
	"context"
	"errors"
	"testing"
	"time"

	"tollgate/algorithms"

	"github.com/redis/go-redis/v9"
)

// multiCase is one property of deciding several rules at once, checked on
// every backend through the engine's Decide and Peek.
type multiCase struct {
	name string
	run  func(t *testing.T, h harness, m *Limiter, prefix string)
}

// tagged is a key under prefix with hash tag tag: keys with the same tag are
// decided in one script on a cluster too.
func tagged(prefix, tag, name string) string { return prefix + "{" + tag + "}" + name }

func decideT(t *testing.T, m *Limiter, rules []Rule, commit bool) ([]Decision, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	decide := m.Peek
	if commit {
		decide = m.Decide
	}
	res, err := decide(ctx, rules)
	ds, allowed := res.Decisions, res.Allowed
	if err != nil {
		t.Fatalf("Decide(%+v, %v): %v", rules, commit, err)
	}
	if len(ds) != len(rules) {
		t.Fatalf("Decide() returned %d decisions for %d rules", len(ds), len(rules))
	}
	return ds, allowed
}

// limitFor is l as algorithm name takes it (limitOf).
func limitFor(name string, l algorithms.Limit) algorithms.Limit {
	spec, err := algorithms.Lookup(name)
	if err != nil {
		panic(err)
	}
	return limitOf(spec, l)
}

// remaining peeks at one rule alone.
func remaining(t *testing.T, m *Limiter, r Rule) int {
	t.Helper()
	ds, _ := decideT(t, m, []Rule{r}, false)
	return ds[0].Remaining
}

var multiCases = []multiCase{
	{"a request denied by the second limit leaves the first untouched", func(t *testing.T, h harness, m *Limiter, prefix string) {
		w := 100 * h.unit
		for _, name := range algorithms.Names() {
			t.Run(name, func(t *testing.T) {
				first := Rule{Algorithm: algo(name), Limit: limitFor(name, algorithms.Limit{Requests: 5, Window: w}), Key: tagged(prefix, name, "first")}
				second := Rule{Algorithm: algo("fixed_window"), Limit: algorithms.Limit{Requests: 1, Window: w}, Key: tagged(prefix, name, "second")}
				rules := []Rule{first, second}
				if ds, ok := decideT(t, m, rules, true); !ok || ds[0].Remaining != 4 || ds[1].Remaining != 0 {
					t.Fatalf("first request: Decide() = %+v, %v; want allowed with remaining 4 and 0", ds, ok)
				}
				before := remaining(t, m, first)
				ds, ok := decideT(t, m, rules, true)
				if ok || !ds[0].Allowed || ds[1].Allowed || ds[0].RetryAfter != 0 || ds[1].RetryAfter <= 0 {
					t.Errorf("second request: Decide() = %+v, %v; want denied by the second rule only", ds, ok)
				}
				if ds[0].Remaining != before {
					t.Errorf("second request: first rule remaining = %d, want %d (nothing consumed)", ds[0].Remaining, before)
				}
				if after := remaining(t, m, first); before != 4 || after != before {
					t.Errorf("first rule remaining before the denied request = %d, after = %d; want 4, 4", before, after)
				}
			})
		}
	}},
	{"10 per short window and 3 per long one admit exactly 3", func(t *testing.T, h harness, m *Limiter, prefix string) {
		for _, name := range algorithms.Names() {
			t.Run(name, func(t *testing.T) {
				short := Rule{Algorithm: algo(name), Limit: limitFor(name, algorithms.Limit{Requests: 10, Window: 100 * h.unit}), Key: tagged(prefix, name, "short")}
				long := Rule{Algorithm: algo(name), Limit: limitFor(name, algorithms.Limit{Requests: 3, Window: 1000 * h.unit}), Key: tagged(prefix, name, "long")}
				admitted := 0
				for range 10 {
					if _, ok := decideT(t, m, []Rule{short, long}, true); ok {
						admitted++
					}
				}
				if admitted != 3 {
					t.Errorf("admitted %d of 10, want 3", admitted)
				}
				if got := remaining(t, m, short); got != 7 {
					t.Errorf("short limit remaining = %d, want 7", got)
				}
				if got := remaining(t, m, long); got != 0 {
					t.Errorf("long limit remaining = %d, want 0", got)
				}
			})
		}
	}},
	{"500 concurrent callers with two limits admit exactly the smaller", func(t *testing.T, h harness, m *Limiter, prefix string) {
		const callers, small, large = 500, 50, 80
		w := 1000 * h.unit // no refill while the callers run, however slowly
		for _, name := range algorithms.Names() {
			t.Run(name, func(t *testing.T) {
				// The other algorithm holds the larger limit, so a leak would show in its state.
				other := algorithms.Names()[(indexOf(name)+1)%len(algorithms.Names())]
				rules := []Rule{
					{Algorithm: algo(other), Limit: limitFor(other, algorithms.Limit{Requests: large, Window: w}), Key: tagged(prefix, name, "large")},
					{Algorithm: algo(name), Limit: limitFor(name, algorithms.Limit{Requests: small, Window: w}), Key: tagged(prefix, name, "small")},
				}
				admitted, _ := together(t, callers, func(ctx context.Context) (bool, error) {
					res, err := m.Decide(ctx, rules)
					return res.Allowed, err
				})
				if admitted != small {
					t.Errorf("%d concurrent callers: admitted %d, want %d", callers, admitted, small)
				}
				if got := remaining(t, m, rules[0]); got != large-small {
					t.Errorf("larger limit remaining = %d, want %d: denied requests consumed it", got, large-small)
				}
				if got := remaining(t, m, rules[1]); got != 0 {
					t.Errorf("smaller limit remaining = %d, want 0", got)
				}
			})
		}
	}},
	{"every algorithm paired with every other in one call", func(t *testing.T, h harness, m *Limiter, prefix string) {
		w := 100 * h.unit
		for _, a := range algorithms.Names() {
			for _, b := range algorithms.Names() {
				if a == b {
					continue
				}
				t.Run(a+"+"+b, func(t *testing.T) {
					rules := []Rule{
						{Algorithm: algo(a), Limit: limitFor(a, algorithms.Limit{Requests: 3, Window: w}), Key: tagged(prefix, a+b, "a")},
						{Algorithm: algo(b), Limit: limitFor(b, algorithms.Limit{Requests: 5, Window: w}), Key: tagged(prefix, a+b, "b")},
					}
					admitted := 0
					for i := range 6 {
						ds, ok := decideT(t, m, rules, true)
						if ds[0].Now != ds[1].Now {
							t.Errorf("request %d: decisions at %v and %v, want one clock", i+1, ds[0].Now, ds[1].Now)
						}
						if ok {
							admitted++
						}
					}
					if admitted != 3 {
						t.Errorf("admitted %d of 6, want 3", admitted)
					}
					if got := remaining(t, m, rules[0]); got != 0 {
						t.Errorf("%s remaining = %d, want 0", a, got)
					}
					if got := remaining(t, m, rules[1]); got != 2 {
						t.Errorf("%s remaining = %d, want 2", b, got)
					}
				})
			}
		}
	}},
	{"cost 2 with limit 5 admits two requests", func(t *testing.T, h harness, m *Limiter, prefix string) {
		w := 100 * h.unit
		for _, name := range algorithms.Names() {
			t.Run(name, func(t *testing.T) {
				r := Rule{Algorithm: algo(name), Limit: limitFor(name, algorithms.Limit{Requests: 5, Window: w}), Cost: 2, Key: tagged(prefix, name, "k")}
				for i, want := range []int{3, 1} {
					if ds, ok := decideT(t, m, []Rule{r}, true); !ok || ds[0].Remaining != want {
						t.Fatalf("request %d: Decide() = %+v, %v; want allowed with remaining %d", i+1, ds, ok, want)
					}
				}
				ds, ok := decideT(t, m, []Rule{r}, true)
				if ok || ds[0].Remaining != 0 || ds[0].RetryAfter <= 0 {
					t.Errorf("third request: Decide() = %+v, %v; want denied with remaining 0 and a retry", ds, ok)
				}
				if got := remaining(t, m, r); got != 1 {
					t.Errorf("after the denied request: remaining = %d, want 1", got)
				}
				one := r
				one.Cost = 1
				if _, ok := decideT(t, m, []Rule{one}, true); !ok {
					t.Errorf("cost 1 with one unit left: denied, want allowed")
				}
			})
		}
	}},
	{"a cost above the capacity is always denied and records nothing", func(t *testing.T, h harness, m *Limiter, prefix string) {
		w := 100 * h.unit
		for _, name := range algorithms.Names() {
			t.Run(name, func(t *testing.T) {
				l := limitFor(name, algorithms.Limit{Requests: 5, Window: w})
				r := Rule{Algorithm: algo(name), Limit: l, Cost: 6, Key: tagged(prefix, name, "k")}
				spec, err := algorithms.Lookup(name)
				if err != nil {
					t.Fatal(err)
				}
				// The horizon; a calendar says when its period ends, at most the horizon.
				hz, least := spec.Horizon(l), spec.Horizon(l)
				if spec.Calendar {
					least = time.Millisecond
				}
				for _, commit := range []bool{false, true} {
					ds, ok := decideT(t, m, []Rule{r}, commit)
					if ok || ds[0].RetryAfter < least || ds[0].RetryAfter > hz {
						t.Errorf("Decide(commit=%v) = %+v, %v; want denied with RetryAfter in [%v, %v] (the horizon)", commit, ds, ok, least, hz)
					}
				}
				if got := remaining(t, m, r); got != 5 {
					t.Errorf("after cost 6: remaining = %d, want 5", got)
				}
				if keys := keysUnder(t, h, prefix+"{"+name+"}"); len(keys) != 0 {
					t.Errorf("keys after denied requests: %v, want none", keys)
				}
			})
		}
	}},
	{"peeks never consume and report what is left now", func(t *testing.T, h harness, m *Limiter, prefix string) {
		w := 100 * h.unit
		for _, name := range algorithms.Names() {
			t.Run(name, func(t *testing.T) {
				r := Rule{Algorithm: algo(name), Limit: limitFor(name, algorithms.Limit{Requests: 5, Window: w}), Key: tagged(prefix, name, "k")}
				for i := range 100 {
					ds, ok := decideT(t, m, []Rule{r}, false)
					if !ok || ds[0].Remaining != 5 || ds[0].RetryAfter != 0 {
						t.Fatalf("peek %d: Decide() = %+v, %v; want allowed with remaining 5", i+1, ds, ok)
					}
				}
				if keys := keysUnder(t, h, prefix+"{"+name+"}"); len(keys) != 0 {
					t.Errorf("keys after peeks only: %v, want none", keys)
				}
				admitted := 0
				for i := range 8 {
					if _, ok := decideT(t, m, []Rule{r}, true); ok {
						admitted++
						if got := remaining(t, m, r); got != 4-i {
							t.Errorf("peek after %d admitted: remaining = %d, want %d", i+1, got, 4-i)
						}
					}
				}
				if admitted != 5 {
					t.Errorf("burst after 100 peeks admitted %d, want 5", admitted)
				}
				ds, ok := decideT(t, m, []Rule{r}, false)
				if ok || ds[0].Allowed || ds[0].Remaining != 0 || ds[0].RetryAfter <= 0 || ds[0].ResetAfter <= 0 {
					t.Errorf("peek when exhausted: Decide() = %+v, %v; want denied, remaining 0, retry and reset > 0", ds, ok)
				}
			})
		}
	}},
	{"rules under different hash tags", func(t *testing.T, h harness, m *Limiter, prefix string) {
		// One script on a single Redis; on a cluster, a peek per tag, then a
		// commit per tag.
		w := 100 * h.unit
		first := Rule{Algorithm: algo("token_bucket"), Limit: algorithms.Limit{Requests: 5, Window: w}, Key: tagged(prefix, "a", "first")}
		second := Rule{Algorithm: algo("sliding_log"), Limit: algorithms.Limit{Requests: 2, Window: w}, Key: tagged(prefix, "b", "second")}
		untagged := Rule{Algorithm: algo("gcra"), Limit: algorithms.Limit{Requests: 4, Window: w}, Key: prefix + "untagged"}
		rules := []Rule{first, second, untagged}
		for i := range 2 {
			if ds, ok := decideT(t, m, rules, true); !ok {
				t.Fatalf("request %d: Decide() = %+v, %v; want allowed", i+1, ds, ok)
			}
		}
		ds, ok := decideT(t, m, rules, true)
		if ok || !ds[0].Allowed || ds[1].Allowed || !ds[2].Allowed || ds[1].Remaining != 0 {
			t.Errorf("third request: Decide() = %+v, %v; want denied by the second rule only", ds, ok)
		}
		for _, tt := range []struct {
			r    Rule
			want int
		}{{first, 3}, {second, 0}, {untagged, 2}} {
			if got := remaining(t, m, tt.r); got != tt.want {
				t.Errorf("%s remaining = %d, want %d", tt.r.Key, got, tt.want)
			}
		}
	}},
}

func indexOf(name string) int {
	for i, n := range algorithms.Names() {
		if n == name {
			return i
		}
	}
	return -1
}

func TestDecideSeveralRules(t *testing.T) {
	t.Parallel()
	var names []string
	for _, tc := range multiCases {
		names = append(names, tc.name)
	}
	for backend, newHarness := range harnesses(t) {
		t.Run(backend, func(t *testing.T) {
			subtests(t, names, func(t *testing.T, i int) {
				h := newHarness(t)
				// Sliding windows are aligned: no case may straddle an edge by accident.
				h.room(100*h.unit, 5*h.unit)
				multiCases[i].run(t, h, New(h.rdb, Options{Clock: h.now}), h.prefix())
			})
		})
	}
}

func TestDecideNoRules(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { rdb.Close() })
	res, err := New(rdb, Options{}).Decide(context.Background(), nil)
	if err != nil || !res.Allowed || len(res.Decisions) != 0 {
		t.Errorf("Decide(no rules) = %+v, %v; want none, allowed, nil", res, err)
	}
}

func TestDecideInvalidRules(t *testing.T) {
	ok := algorithms.Limit{Requests: 1, Window: time.Second}
	tests := []struct {
		name  string
		rules []Rule
		want  error
	}{
		{"unknown algorithm", []Rule{{Algorithm: algo("leaky"), Limit: ok, Key: "a"}}, algorithms.ErrUnknown},
		{"invalid limit", []Rule{{Algorithm: algo("gcra"), Limit: algorithms.Limit{Window: time.Second}, Key: "a"}}, algorithms.ErrInvalidLimit},
		{"gcra burst beyond its µs arithmetic", []Rule{{Algorithm: algo("gcra"), Limit: algorithms.Limit{Requests: 1, Burst: 100_000_000, Window: time.Hour}, Key: "a"}}, algorithms.ErrInvalidLimit},
		{"negative cost", []Rule{{Algorithm: algo("gcra"), Limit: ok, Cost: -1, Key: "a"}}, ErrInvalidRule},
		{"one key twice", []Rule{{Algorithm: algo("gcra"), Limit: ok, Key: "a"}, {Algorithm: algo("gcra"), Limit: ok, Key: "a"}}, ErrInvalidRule},
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { rdb.Close() })
	m := New(rdb, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := m.Decide(context.Background(), tt.rules); !errors.Is(err, tt.want) {
				t.Errorf("Decide() error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestHashTag(t *testing.T) {
	tests := []struct{ key, want string }{
		{"plain", "plain"},
		{"p:{user}:a", "user"},
		{"p:{}:a", "p:{}:a"},
		{"p:{a}{b}", "a"},
		{"p:{open", "p:{open"},
	}
	for _, tt := range tests {
		if got := hashTag(tt.key); got != tt.want {
			t.Errorf("hashTag(%q) = %q, want %q", tt.key, got, tt.want)
		}
	}
}

// TestWindowKey: a window's key starts with its rule's key and is in its hash
// slot: the rule's hash tag, or the rule's key as the tag when it has none.
func TestWindowKey(t *testing.T) {
	for _, tt := range []struct {
		key  string
		n    int64
		want string
	}{
		{"rl:{user:ann}:default:0:fixed_window", 493524, "rl:{user:ann}:default:0:fixed_window:493524"},
		{"k", 5, "k:{k}:5"},
		{"k{}", -1, "k{}:{k{}}:-1"},
	} {
		if got := windowKey(tt.key, tt.n); got != tt.want {
			t.Errorf("windowKey(%q, %d) = %q, want %q", tt.key, tt.n, got, tt.want)
		}
	}
}

func TestScriptForCarriesOnlyTheRulesModules(t *testing.T) {
	spec := func(name string) algorithms.Spec {
		s, err := algorithms.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	fw, gcra := spec("fixed_window"), spec("gcra")
	s := newScripts(nil)
	if got, want := s.scriptFor([]rule{{spec: gcra}, {spec: gcra}}).Hash(), compose([]algorithms.Spec{gcra}).Hash(); got != want {
		t.Errorf("two gcra rules: got script %s, want gcra's own %s", got, want)
	}
	want := compose([]algorithms.Spec{fw, gcra}).Hash()
	for _, rs := range [][]rule{{{spec: fw}, {spec: gcra}}, {{spec: gcra}, {spec: fw}, {spec: gcra}}} {
		if got := s.scriptFor(rs).Hash(); got != want {
			t.Errorf("fixed_window and gcra rules: got script %s, want the one with just their modules %s", got, want)
		}
	}
	if first, again := s.scriptFor([]rule{{spec: fw}, {spec: gcra}}), s.scriptFor([]rule{{spec: gcra}, {spec: fw}}); first != again {
		t.Errorf("the same modules twice: two scripts, want one composed once and kept")
	}
}

func TestTimeoutBoundsEveryCall(t *testing.T) {
	slow := deciderFunc(func(ctx context.Context, rules []Rule, commit bool) ([]Decision, bool, error) {
		<-ctx.Done()
		return nil, false, ctx.Err()
	})
	start := time.Now()
	_, _, err := newTimeout(slow, 20*time.Millisecond).decide(context.Background(), nil, true)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Decide() error = %v, want context.DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Decide() took %v, want about the 20ms timeout", took)
	}
}

func TestTimeoutDeadlineIsTheTimeoutAfterTheCallStarts(t *testing.T) {
	const timeout = 160 * time.Millisecond
	var deadlines []time.Duration
	record := deciderFunc(func(ctx context.Context, rules []Rule, commit bool) ([]Decision, bool, error) {
		return nil, true, nil
	})
	d := newTimeout(record, timeout)
	start := time.Now()
	for i := range 50 {
		now := start.Add(time.Duration(i) * time.Millisecond) // calls over 50ms: several slices
		dl, ok := d.context(now).Deadline()
		if !ok {
			t.Fatal("context has no deadline")
		}
		deadlines = append(deadlines, dl.Sub(now))
	}
	for i, got := range deadlines {
		if got <= timeout-timeout/16 || got > timeout {
			t.Errorf("call %d: deadline %v after its start, want more than %v and at most %v", i, got, timeout-timeout/16, timeout)
		}
	}
	if _, _, err := d.decide(context.Background(), nil, true); err != nil {
		t.Errorf("Decide() error = %v", err)
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := d.decide(done, nil, true); !errors.Is(err, context.Canceled) {
		t.Errorf("Decide(done ctx) error = %v, want context.Canceled", err)
	}
}

// deciderFunc is a stage made of a function.
type deciderFunc func(ctx context.Context, rules []Rule, commit bool) ([]Decision, bool, error)

func (f deciderFunc) decide(ctx context.Context, rules []Rule, commit bool) ([]Decision, bool, error) {
	return f(ctx, rules, commit)
}
