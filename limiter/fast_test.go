package limiter

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"tollgate/algorithms"
)

// TestFastScriptsDecideAsTheModules runs every algorithm's flat one-rule
// script (Spec.Fast) and its module with the one-rule driver side by side,
// on two keys given the same calls at the same instants (miniredis, clock
// steered): decisions, peeks, costs up to beyond the capacity, grants (the
// lease driver's mode g, so the states a grant leaves are decided too), and
// clock steps from a microsecond to beyond the horizon. Every reply and the
// state each leaves must be the same.
// fastSteps is how many calls TestFastScriptsDecideAsTheModules makes per
// algorithm and limit: miniredis parses a module's script on every call, so
// the default keeps the test to seconds; more for a sweep.
var fastSteps = flag.Int("fast.steps", 400, "calls per algorithm and limit in TestFastScriptsDecideAsTheModules")

func TestFastScriptsDecideAsTheModules(t *testing.T) {
	var fast []algorithms.Spec
	for _, name := range algorithms.Names() {
		if s := algo(name); s.Fast != "" {
			fast = append(fast, s)
		}
	}
	if len(fast) == 0 {
		t.Skip("no algorithm has a flat script")
	}
	limits := []algorithms.Limit{
		{Requests: 5, Window: time.Second},
		{Requests: 3, Window: 1500 * time.Millisecond, Burst: 7},
		{Requests: 1000, Window: time.Minute, Burst: 1000},
		{Requests: 7, Window: time.Hour},
	}
	for _, spec := range fast {
		for li, l := range limits {
			l := limitOf(spec, l)
			if spec.Validate(l) != nil {
				continue
			}
			t.Run(fmt.Sprintf("%s/%d", spec.Name, li), func(t *testing.T) {
				t.Parallel()
				compareFast(t, spec, l, uint64(li+1), *fastSteps)
			})
		}
	}
}

func compareFast(t *testing.T, spec algorithms.Spec, l algorithms.Limit, seed uint64, steps int) {
	ctx := context.Background()
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	now := time.UnixMicro(1_800_000_000_123_456)
	m.SetTime(now)
	rnd := rand.New(rand.NewPCG(seed, 7))

	fast, composed := redis.NewScript(spec.Fast), composeSingle(spec)
	admin := composeWith([]algorithms.Spec{spec}, leaseDriverLua)
	args := spec.Args(l)
	capacity := spec.Quota(l)
	horizon := spec.Horizon(l)
	const fk, ck = "{f}:k", "{c}:k"
	// at is the key and arguments (Args and those made per call) of a call
	// on key now: an Epoch algorithm's window key and number.
	at := func(key string, a []any) (string, []any) {
		a, k := perCall(append(a, args...), rule{spec: spec, limit: l, key: key}, now)
		return k, a
	}
	var log []string
	for step := range steps {
		var op string
		switch p := rnd.IntN(100); {
		case p < 8 && spec.Grants:
			n := 1 + rnd.IntN(max(capacity, 1))
			op = fmt.Sprintf("grant %d", n)
			for _, key := range []string{fk, ck} {
				k, a := at(key, []any{fmt.Sprintf("g%d", n), "n", spec.Name})
				if err := admin.Run(ctx, rdb, []string{k, leaseSet(key)}, append(a, 1)...).Err(); err != nil {
					t.Fatalf("step %d: %s on %s: %v", step, op, key, err)
				}
			}
		case p < 30:
			var d time.Duration
			switch rnd.IntN(4) {
			case 0:
				d = time.Duration(1+rnd.IntN(1000)) * time.Microsecond
			case 1:
				d = time.Duration(rnd.Int64N(int64(l.Window)/4 + 1))
			case 2:
				d = time.Duration(rnd.Int64N(int64(l.Window) + 1))
			default:
				d = time.Duration(rnd.Int64N(int64(horizon) + int64(time.Second)))
			}
			now = now.Add(d)
			m.SetTime(now)
			op = "wait " + d.String()
		default:
			mode := "1"
			if rnd.IntN(5) == 0 {
				mode = "0"
			}
			cost := 1 + rnd.IntN(3)
			if rnd.IntN(20) == 0 {
				cost = 1 + rnd.IntN(capacity+2)
			}
			nonce := fmt.Sprintf("n%d", step)
			op = fmt.Sprintf("mode %s cost %d", mode, cost)
			fkw, a := at(fk, []any{mode, nonce})
			a = append(a, cost)
			got, err := fast.Run(ctx, rdb, []string{fkw}, a...).Int64Slice()
			if err != nil {
				t.Fatalf("step %d: %s: fast: %v", step, op, err)
			}
			ckw, _ := at(ck, nil)
			want, err := composed.Run(ctx, rdb, []string{ckw}, a...).Int64Slice()
			if err != nil {
				t.Fatalf("step %d: %s: module: %v", step, op, err)
			}
			op += fmt.Sprintf(" -> %v", want)
			if !slices.Equal(got, want) {
				t.Fatalf("step %d: %s: fast script replied %v, module %v\nlast steps:\n%s", step, op, got, want, strings.Join(log[max(len(log)-10, 0):], "\n"))
			}
		}
		log = append(log, fmt.Sprintf("%d: %s", step, op))
		fkw, _ := at(fk, nil)
		ckw, _ := at(ck, nil)
		if f, c := dumpState(t, m, fkw), dumpState(t, m, ckw); f != c {
			t.Fatalf("step %d: %s: fast script left %s, module %s\nlast steps:\n%s", step, op, f, c, strings.Join(log[max(len(log)-10, 0):], "\n"))
		}
	}
}

// dumpState is key's value and TTL in miniredis, whatever its type.
func dumpState(t *testing.T, m *miniredis.Miniredis, key string) string {
	if !m.Exists(key) {
		return "none"
	}
	var v strings.Builder // a zset of thousands: no quadratic concatenation
	switch typ := m.Type(key); typ {
	case "string":
		s, _ := m.Get(key)
		v.WriteString(s)
	case "hash":
		fs, _ := m.HKeys(key)
		slices.Sort(fs)
		for _, f := range fs {
			fmt.Fprintf(&v, "%s=%s ", f, m.HGet(key, f))
		}
	case "zset":
		ms, _ := m.ZMembers(key)
		for _, mem := range ms {
			sc, _ := m.ZScore(key, mem)
			fmt.Fprintf(&v, "%s@%.0f ", mem, sc)
		}
	default:
		t.Fatalf("%s: type %s", key, typ)
	}
	return fmt.Sprintf("%s ttl %v", v.String(), m.TTL(key))
}
