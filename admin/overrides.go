package admin

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"tollgate/config"
	"tollgate/models"
	"tollgate/policy"
	"tollgate/username"
)

// runOverrides runs an overrides command (set, list, delete).
func runOverrides(ctx context.Context, store *models.Store, cfg config.Config, routes []policy.Route, cmd command, stdout io.Writer) error {
	switch cmd.do {
	case "overrides set":
		return setOverride(ctx, store, cfg, routes, cmd, stdout)
	case "overrides list":
		return listOverrides(ctx, store, stdout)
	}
	if err := store.DeleteOverride(ctx, cmd.override.ID); err != nil {
		return err
	}
	_, err := fmt.Fprintf(stdout, "deleted override %d (running servers drop it within RATE_LIMIT_OVERRIDES_REFRESH, %v)\n", cmd.override.ID, cfg.OverridesRefresh)
	return err
}

// parseOverrideSet reads overrides set's arguments: one subject, user name
// or ip:CIDR (canonical: policy.ParseOverrideSubject), and the flags, before
// or after it.
func parseOverrideSet(do string, rest []string) (command, error) {
	fs := flag.NewFlagSet(do, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	name := fs.String("policy", "", "")
	limit := fs.Int("limit", 0, "")
	window := fs.Duration("window", 0, "")
	expires := fs.Duration("expires", 0, "")
	pos, err := parseAround(fs, do, rest)
	if err != nil {
		return command{}, err
	}
	if len(pos) != 1 {
		return command{}, fmt.Errorf("%w: %s: want one USER or ip:CIDR", ErrUsage, do)
	}
	user, prefix, err := policy.ParseOverrideSubject(pos[0])
	if err != nil {
		return command{}, fmt.Errorf("%w: %s: %w", ErrUsage, do, err)
	}
	if prefix == (netip.Prefix{}) && (!username.Valid(user) || strings.HasPrefix(user, "-")) {
		return command{}, fmt.Errorf("%w: %s: %q: want a USER (%s) or ip:CIDR", ErrUsage, do, user, username.Rule)
	}
	if *expires < 0 {
		return command{}, fmt.Errorf("%w: %s: --expires %v: want a positive Go duration such as 72h", ErrUsage, do, *expires)
	}
	o := policy.Override{User: user, Prefix: prefix, Policy: *name, Limit: *limit, Window: *window}
	if *window != 0 && *window%time.Millisecond != 0 {
		return command{}, fmt.Errorf("%w: %s: --window %v: want whole milliseconds", ErrUsage, do, *window)
	}
	if err := policy.CheckOverride(o); err != nil {
		return command{}, fmt.Errorf("%w: %s: %w (--policy P --limit N [--window W])", ErrUsage, do, err)
	}
	return command{do: do, override: o, expires: *expires}, nil
}

// setOverride stores cmd's override, once the policy files here say the
// servers can use it: one their policy cannot use (a limit below its cost,
// beyond its algorithm's bound) is refused, a usage error saying why, as
// the servers would leave it out. One whose policy is in neither file is
// stored with a note (it then applies to nothing until one has it).
func setOverride(ctx context.Context, store *models.Store, cfg config.Config, routes []policy.Route, cmd command, stdout io.Writer) error {
	o := cmd.override
	var notes []string
	known := false
	for _, path := range []string{cfg.PolicyFile, cfg.CandidateFile} {
		if path == "" && path == cfg.CandidateFile {
			continue // no candidate file (no policy file: the RATE_LIMIT_* policy)
		}
		policies, _, err := LoadPolicies(cfg, path, routes)
		if err != nil || !slices.ContainsFunc(policies, func(p policy.Policy) bool { return p.Name == o.Policy }) {
			continue
		}
		known = true
		// Exactly the servers' check: the override as they take it.
		err = policy.NewSet(policies, cfg.KeyPrefix).OverrideError(o)
		switch {
		case err != nil && path == cfg.PolicyFile:
			return fmt.Errorf("%w: %s: %w: the servers would leave it out (--limit N [--window W])", ErrUsage, cmd.do, err)
		case err != nil:
			notes = append(notes, fmt.Sprintf("note: the candidate file leaves it out: %v", err))
		}
	}
	if !known {
		notes = append(notes, fmt.Sprintf("note: no policy %s in the policy files here: the override applies to nothing until one has it", o.Policy))
	}
	row := models.OverrideRow{Subject: o.Subject(), Policy: o.Policy, Requests: o.Limit, WindowMS: o.Window.Milliseconds()}
	expires := "never"
	if cmd.expires > 0 {
		at := time.Now().Add(cmd.expires).UTC().Truncate(time.Second)
		row.ExpiresAt = &at
		expires = at.Format(time.RFC3339)
	}
	id, err := store.SetOverride(ctx, row)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(stdout, "override %d: %s, policy %s, %d per %s, expires %s (running servers apply it within RATE_LIMIT_OVERRIDES_REFRESH, %v)\n",
		id, row.Subject, o.Policy, o.Limit, windowText(o.Window), expires, cfg.OverridesRefresh); err != nil {
		return err
	}
	for _, n := range notes {
		if _, err := fmt.Fprintln(stdout, n); err != nil {
			return err
		}
	}
	return nil
}

// windowText is an override's window as listed: "(policy's)" for 0.
func windowText(w time.Duration) string {
	if w == 0 {
		return "the policy's window"
	}
	return w.String()
}

// listOverrides prints one line per override, expired ones too: id, subject,
// policy, limit, window, expires (UTC; "never", or "expired").
func listOverrides(ctx context.Context, store *models.Store, stdout io.Writer) error {
	rows, err := store.Overrides(ctx, time.Time{})
	if err != nil {
		return err
	}
	now := time.Now()
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tSUBJECT\tPOLICY\tLIMIT\tWINDOW\tEXPIRES")
	for _, r := range rows {
		expires := "never"
		if r.ExpiresAt != nil {
			expires = r.ExpiresAt.UTC().Format(time.RFC3339)
			if !now.Before(*r.ExpiresAt) {
				expires += " (expired)"
			}
		}
		window := "-"
		if r.WindowMS > 0 {
			window = (time.Duration(r.WindowMS) * time.Millisecond).String()
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%s\t%s\n", r.ID, r.Subject, r.Policy, r.Requests, window, expires)
	}
	return w.Flush()
}
