package admin

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"tollgate/algorithms"
	"tollgate/auth"
	"tollgate/config"
	"tollgate/limiter"
	"tollgate/live"
	"tollgate/models"
	"tollgate/policy"
)

// quotaTimeout bounds each Redis call of the quota commands: an operator
// waits, but not forever, and a command is not cut short at the hot path's
// RATE_LIMIT_TIMEOUT.
const quotaTimeout = 2 * time.Second

// QuotaChannel is where the quota commands announce changed keys (limiter.
// Announce) and where servers with a deny cache follow them (limiter.Follow).
func QuotaChannel(keyPrefix string) string { return keyPrefix + "changes" }

// runQuota runs "quota show|reset|grant" with the server's settings: its
// Redis, its policies (RATE_LIMIT_POLICY_FILE or the RATE_LIMIT_* default),
// its key prefix and IPv6 grouping, and, for a user, the tier in its
// database. Changes are logged to stderr and announced to the servers, whose
// deny caches would otherwise keep answering from memory.
func runQuota(ctx context.Context, cmd command, cfg config.Config, env Env) error {
	stdout := env.Stdout
	if !cfg.Enabled {
		return errors.New("rate limiting is off (RATE_LIMIT_ENABLED=false): no quota applies")
	}
	if cfg.RedisURL == "" && len(cfg.RedisCluster) == 0 && len(cfg.RedisSentinels) == 0 {
		return fmt.Errorf("config: %w: quota commands need REDIS_URL, REDIS_CLUSTER_ADDRS or REDIS_SENTINEL_ADDRS: the embedded Redis lives inside the server's process", config.ErrInvalid)
	}
	policies, _, err := LoadPolicies(cfg, cfg.PolicyFile, env.Routes)
	if err != nil {
		return err
	}
	if cmd.policy != "" && !slices.ContainsFunc(policies, func(p policy.Policy) bool { return p.Name == cmd.policy }) {
		names := make([]string, len(policies))
		for i, p := range policies {
			names[i] = p.Name
		}
		return fmt.Errorf("%w: %s: --policy %q: want one of %s", ErrUsage, cmd.do, cmd.policy, strings.Join(names, ", "))
	}
	store, closeDB, err := openUserStore(ctx, cfg, env.hashCost())
	if err != nil {
		return err
	}
	defer closeDB()
	who, subject, err := quotaCaller(ctx, store, cmd.name, cfg)
	if err != nil {
		return err
	}
	// The overrides in force, as the servers apply them (live).
	var notes []string
	overrides, err := live.LoadOverrides(ctx, store, who.Now)
	if err != nil && overrides == nil {
		return err
	}
	set, oerr := policy.NewSet(policies, cfg.KeyPrefix).WithOverrides(overrides)
	if err = errors.Join(err, oerr); err != nil {
		notes = append(notes, "overrides the servers leave out too: "+strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	log := env.NewLogger(env.Stderr, cfg.LogFormat, cfg.LogLevel)
	rdb, closeRedis, err := env.OpenRedis(ctx, log, cfg, quotaTimeout)
	if err != nil {
		return err
	}
	defer closeRedis()

	applied, more := quotaLimits(set, policies, who, subject, cmd.policy)
	notes = append(notes, more...)
	if cmd.do != "quota show" && len(applied) == 0 {
		what := "no policy"
		if cmd.policy != "" {
			what = "policy " + cmd.policy
		}
		return fmt.Errorf("%s: %s sets no limit for %s (exempt, or not for its tier)", cmd.do, what, subject)
	}

	engine := limiter.New(rdb, limiter.Options{Timeout: quotaTimeout})
	rules := make([]limiter.Rule, len(applied))
	for i, a := range applied {
		rules[i] = a.Rule
	}
	var res limiter.Result
	switch cmd.do {
	case "quota show":
		if len(rules) > 0 {
			res, err = engine.Peek(ctx, rules)
		}
	case "quota reset":
		res, err = engine.Reset(ctx, rules)
	case "quota grant":
		var skipped []string
		res, rules, skipped, err = grantQuota(ctx, engine, applied, cmd.units)
		notes = append(notes, skipped...)
		if errors.Is(err, algorithms.ErrNoGrant) || errors.Is(err, algorithms.ErrInvalidLimit) {
			err = fmt.Errorf("%w: %s: policy %s: %w", ErrUsage, cmd.do, cmd.policy, err)
		}
	}
	if err != nil {
		return err
	}
	if cmd.do != "quota show" {
		policy := cmd.policy
		if policy == "" {
			policy = "*"
		}
		attrs := []any{"subject", subject, "policy", policy, "limits", len(rules)}
		if op := env.Getenv("USER"); op != "" {
			attrs = append(attrs, "operator", op) // who ran the command, for the audit trail
		}
		if cmd.do == "quota grant" {
			log.Info("quota granted", append(attrs, "units", cmd.units)...)
		} else {
			log.Info("quota reset", attrs...)
		}
		if err := limiter.Announce(ctx, rdb, QuotaChannel(cfg.KeyPrefix), rules); err != nil {
			log.Warn("servers not told: their deny caches may deny until the denials' Retry-After", "err", err)
		}
	}
	return printQuota(stdout, subject, who.Tier, applied, res, notes)
}

// grantQuota gives n units to each limit of applied that has a grant, and
// skips, with a note each, those that have none: a concurrency limit holds
// places while requests run, and has no quota for the period to give (a
// policy may mix one with a calendar quota). It returns the state of every
// limit of applied, in order, and the rules granted; with none to grant,
// an error wrapping algorithms.ErrNoGrant.
func grantQuota(ctx context.Context, engine *limiter.Limiter, applied []policy.Applied, n int) (res limiter.Result, granted []limiter.Rule, notes []string, err error) {
	var skipped []limiter.Rule
	var isSkipped []bool // by position in applied
	for _, a := range applied {
		if !a.Rule.Algorithm.Grants {
			skipped = append(skipped, a.Rule)
			isSkipped = append(isSkipped, true)
			notes = append(notes, fmt.Sprintf("%s (%s) not granted: it counts the requests running, which hold their places until they end; nothing to grant", a.Limit.Name, a.Limit.Algorithm.Name))
			continue
		}
		granted = append(granted, a.Rule)
		isSkipped = append(isSkipped, false)
	}
	if len(granted) == 0 {
		return limiter.Result{}, nil, nil, fmt.Errorf("%w: its limits hold places while requests run (nothing to grant): wait for them to end, or reset them", algorithms.ErrNoGrant)
	}
	g, err := engine.Grant(ctx, granted, n)
	if err != nil {
		return limiter.Result{}, nil, nil, err
	}
	var p limiter.Result
	if len(skipped) > 0 {
		if p, err = engine.Peek(ctx, skipped); err != nil {
			return limiter.Result{}, nil, nil, err
		}
	}
	res.Allowed = g.Allowed && (len(skipped) == 0 || p.Allowed)
	for _, s := range isSkipped {
		if s {
			res.Decisions, p.Decisions = append(res.Decisions, p.Decisions[0]), p.Decisions[1:]
		} else {
			res.Decisions, g.Decisions = append(res.Decisions, g.Decisions[0]), g.Decisions[1:]
		}
	}
	return res, granted, notes, nil
}

// quotaLimits are the limits of policy (every policy, if "") that apply to
// who anywhere, as /ratelimit lists them, and notes on what is left out: a
// user counted by address (key ip) is counted per request's address, and a
// header key has no value here.
func quotaLimits(set *policy.Set, policies []policy.Policy, who policy.Caller, subject, name string) ([]policy.Applied, []string) {
	applied, unlisted := set.AllRules(who, nil)
	var notes []string
	if unlisted != "" {
		notes = append(notes, fmt.Sprintf("tier %s has no limits in policy %s, which has no default limits: it does not limit %s", who.Tier, unlisted, subject))
	}
	applied = slices.DeleteFunc(applied, func(a policy.Applied) bool {
		return who.User != "" && a.Policy.Key == "ip" || name != "" && a.Policy.Name != name
	})
	for _, p := range policies {
		switch {
		case name != "" && p.Name != name:
		case who.User != "" && p.Key == "ip":
			notes = append(notes, fmt.Sprintf("policy %s counts users by their address: see quota show ip:ADDR", p.Name))
		case strings.HasPrefix(p.Key, "header:"):
			notes = append(notes, fmt.Sprintf("policy %s counts by the %s header: not shown", p.Name, strings.TrimPrefix(p.Key, "header:")))
		}
	}
	return applied, notes
}

// quotaCaller is who (a user name, or ip:ADDR) as the policies see them
// now, and their subject: a user with the tier the database gives, or an
// address as the server counts it (auth.AddrSubject) with the anonymous tier.
func quotaCaller(ctx context.Context, store *models.Store, who string, cfg config.Config) (policy.Caller, string, error) {
	now := time.Now()
	if addr, ok := strings.CutPrefix(who, "ip:"); ok {
		a, _ := auth.CanonicalAddr(addr) // checked by parseCommand
		c := policy.Caller{IP: auth.AddrSubject(a, cfg.IPv6Prefix), Addr: a, Tier: policy.AnonymousTier, Now: now}
		return c, "ip:" + c.IP, nil
	}
	tier, err := store.Tier(ctx, who)
	if errors.Is(err, models.ErrNotFound) {
		return policy.Caller{}, "", fmt.Errorf("no user %q: a user that does not exist has no quota (for an address, write ip:ADDR)", who)
	}
	if err != nil {
		return policy.Caller{}, "", err
	}
	return policy.Caller{User: who, Tier: tier, Now: now}, "user:" + who, nil
}

// printQuota prints each limit's state in res, as /ratelimit shows it.
func printQuota(stdout io.Writer, subject, tier string, applied []policy.Applied, res limiter.Result, notes []string) error {
	fmt.Fprintf(stdout, "%s (tier %s)\n", subject, tier)
	if len(applied) == 0 {
		fmt.Fprintln(stdout, "no limits apply")
	} else {
		w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "POLICY\tALGORITHM\tLIMIT\tWINDOW\tUSED\tREMAINING\tRESET")
		for i, a := range applied {
			d := res.Decisions[i]
			name := a.Limit.Name
			if a.Policy.Shadow {
				name += " (shadow)"
			}
			if a.Override != nil {
				name += fmt.Sprintf(" (override %d)", a.Override.ID)
			}
			reset := "-" // full
			if d.ResetAfter > 0 {
				secs := int64(math.Ceil(d.ResetAfter.Seconds()))
				reset = fmt.Sprintf("%s (in %ds)", d.Now.Add(time.Duration(secs)*time.Second).UTC().Format(time.RFC3339), secs)
			}
			fmt.Fprintf(w, "%s\t%s\t%d\t%v\t%d\t%d\t%s\n", name, a.Limit.Algorithm.Name, d.Limit, d.Window, max(d.Limit-d.Remaining, 0), d.Remaining, reset)
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	for _, n := range notes {
		fmt.Fprintln(stdout, "note:", n)
	}
	return nil
}

// parseQuota checks the arguments of a quota command: WHO (a user name or
// ip:ADDR), N for a grant, and --policy P anywhere among them (required for
// a grant).
func parseQuota(do string, rest []string) (command, error) {
	fs := flag.NewFlagSet(do, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	policy := fs.String("policy", "", "")
	if do == "quota grant" {
		// A negative N reads as a flag ("flag provided but not defined: -5").
		for i, a := range rest {
			if _, err := strconv.Atoi(a); err == nil && strings.HasPrefix(a, "-") && (i == 0 || !isPolicyFlag(rest[i-1])) {
				return command{}, fmt.Errorf("%w: %s: N must be a positive integer, not %q", ErrUsage, do, a)
			}
		}
	}
	pos, err := parseAround(fs, do, rest)
	if err != nil {
		return command{}, err
	}
	want := 1
	if do == "quota grant" {
		want = 2
	}
	switch {
	case len(pos) != want && do == "quota grant":
		return command{}, fmt.Errorf("%w: %s: want WHO N --policy P", ErrUsage, do)
	case len(pos) != want:
		return command{}, fmt.Errorf("%w: %s: want one WHO: a user NAME or ip:ADDR", ErrUsage, do)
	case do == "quota show" && *policy != "":
		return command{}, fmt.Errorf("%w: %s: takes no --policy (it shows them all)", ErrUsage, do)
	case do == "quota grant" && *policy == "":
		return command{}, fmt.Errorf("%w: %s: want --policy P: a grant is for one policy", ErrUsage, do)
	}
	cmd := command{do: do, name: pos[0], policy: *policy}
	if addr, ok := strings.CutPrefix(cmd.name, "ip:"); ok {
		if _, ok := auth.CanonicalAddr(addr); !ok {
			return command{}, fmt.Errorf("%w: %s: %q: want ip: and an IPv4 or IPv6 address", ErrUsage, do, cmd.name)
		}
	} else if _, err := nameArg(do, pos[:1]); err != nil {
		return command{}, err
	}
	if do == "quota grant" {
		n, err := strconv.Atoi(pos[1])
		if err != nil || n < 1 {
			return command{}, fmt.Errorf("%w: %s: N must be a positive integer, not %q", ErrUsage, do, pos[1])
		}
		cmd.units = n
	}
	return cmd, nil
}

// isPolicyFlag reports whether arg is --policy (or -policy) without its
// value: the next argument is that value.
func isPolicyFlag(arg string) bool { return arg == "--policy" || arg == "-policy" }
