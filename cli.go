package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"

	"tollgate/config"
	"tollgate/models"
	"tollgate/policy"
	"tollgate/username"
)

// errUsage is wrapped by runCLI's errors about the command line itself.
var errUsage = errors.New("usage")

// usage is what the admin commands are; main prints it after a usage error.
const usage = `usage:
  tollgate                              serve the API (settings from the environment and .env)
  tollgate healthcheck                  exit 0 if the server on PORT answers GET /healthz with 200, else 1
  tollgate users add NAME [--tier TIER] add a user; the password is read from stdin (one line)
  tollgate users list                   list the users: name, tier, created
  tollgate users set-tier NAME TIER     give NAME the tier TIER
  tollgate users passwd NAME            set NAME's password, read from stdin (one line)
  tollgate users delete NAME            delete NAME and revoke its API keys
  tollgate keys create NAME             make an API key for NAME and print it (shown only once)
  tollgate keys list [NAME]             list the API keys (of NAME): id, user, prefix, created, revoked
  tollgate keys revoke ID               revoke the API key ID
  tollgate overrides set USER|ip:CIDR --policy P --limit N [--window W] [--expires 72h]
                                        replace policy P's limits for USER (or the addresses of CIDR)
                                        by N per window (W: default the window of the limit replaced)
  tollgate overrides list               list the overrides: id, subject, policy, limit, window, expires
  tollgate overrides delete ID          delete the override ID
  tollgate quota show WHO               every limit that applies to WHO: used, remaining, reset
  tollgate quota reset WHO [--policy P] give WHO the full quota back (of policy P, or of all)
  tollgate quota grant WHO N --policy P give WHO N more units of policy P, for the current window
  (WHO: a user NAME, or ip:ADDR for callers without credentials; quota needs the servers'
  Redis, REDIS_URL, REDIS_CLUSTER_ADDRS or REDIS_SENTINEL_ADDRS, and their policies)
exit codes: 0 done, 1 failed (database, Redis, unknown user or key), 2 usage or settings error
`

// command is one parsed admin command line.
type command struct {
	do     string // "users add", "keys create", ... or "help"
	name   string // the NAME argument, where there is one; quota: WHO
	tier   string // users add, users set-tier
	id     uint   // keys revoke
	policy string // quota reset, quota grant
	units  int    // quota grant
	// overrides set (Override.ID is the ID of overrides delete)
	override policy.Override
	expires  time.Duration // overrides set --expires; 0: never
}

// runCLI runs the admin command args (without the program name) on the
// database of the settings getenv gives (DB_DRIVER, DB_DSN), migrating and
// seeding it first as the server does (SEED_USERS), so the CLI sees the
// users the server sees. A password is read from stdin, never from args, so
// it stays out of shell history and process listings. Results go to stdout,
// log lines (quota changes) to stderr.
func runCLI(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	cmd, err := parseCommand(args)
	if err != nil {
		return err
	}
	if cmd.do == "help" {
		_, err := fmt.Fprint(stdout, usage)
		return err
	}
	if cmd.do == "healthcheck" {
		cfg, err := config.Load(getenv, configRules())
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		return healthcheck(ctx, cfg.Port, stdout)
	}
	var password string
	if cmd.do == "users add" || cmd.do == "users passwd" {
		// Read before connecting: a missing password costs no connection.
		if password, err = readPassword(stdin); err != nil {
			return err
		}
	}
	cfg, err := config.Load(getenv, configRules())
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if strings.HasPrefix(cmd.do, "quota ") {
		return runQuota(ctx, cmd, cfg, getenv, stdout, stderr)
	}
	store, closeDB, err := openUserStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeDB()
	switch cmd.do {
	case "users add":
		if err := store.CreateUser(ctx, cmd.name, password, cmd.tier); err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "created user %s (tier %s)\n", cmd.name, cmd.tier)
	case "keys create":
		id, key, err := store.CreateAPIKey(ctx, cmd.name)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "id %d\nkey %s\nStore the key now: it is not shown again. Send it as the X-API-Key header.\n", id, key)
		return err
	case "keys revoke":
		if err := store.RevokeAPIKey(ctx, cmd.id); err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "revoked key %d\n", cmd.id)
	case "users list":
		return listUsers(ctx, store, stdout)
	case "users set-tier":
		if err := store.SetTier(ctx, cmd.name, cmd.tier); err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "user %s now has tier %s (running servers apply it within the 5-minute credential cache)\n", cmd.name, cmd.tier)
	case "users passwd":
		if err := store.SetPassword(ctx, cmd.name, password); err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "password of %s changed (the old one works on running servers for up to 5 minutes, their credential cache)\n", cmd.name)
	case "users delete":
		if err := store.DeleteUser(ctx, cmd.name); err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "deleted user %s and revoked its API keys\n", cmd.name)
	case "keys list":
		return listKeys(ctx, store, cmd.name, stdout)
	case "overrides set":
		return setOverride(ctx, store, cfg, cmd, stdout)
	case "overrides list":
		return listOverrides(ctx, store, stdout)
	case "overrides delete":
		if err := store.DeleteOverride(ctx, cmd.override.ID); err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "deleted override %d (running servers drop it within RATE_LIMIT_OVERRIDES_REFRESH, %v)\n", cmd.override.ID, cfg.OverridesRefresh)
	}
	if err == nil && slices.ContainsFunc(cfg.SeedUsers, func(u config.SeedUser) bool { return u.Name == cmd.name }) &&
		(cmd.do == "users passwd" || cmd.do == "users delete" || cmd.do == "users set-tier") {
		_, err = fmt.Fprintf(stdout, "note: SEED_USERS names %s: each start (and each admin command) seeds it again from there\n", cmd.name)
	}
	return err
}

// openUserStore opens the database of cfg, migrating and seeding it as the
// server does, and returns the Store on it and how to close it.
func openUserStore(ctx context.Context, cfg config.Config) (*models.Store, func(), error) {
	db, err := models.Open(ctx, slog.New(slog.DiscardHandler), cfg.DBDriver, cfg.DBDSN)
	if err != nil {
		return nil, nil, err
	}
	closeDB := func() {
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.Close()
		}
	}
	if err := models.Migrate(ctx, db); err != nil {
		closeDB()
		return nil, nil, err
	}
	store, err := seedStore(ctx, db, cfg.SeedUsers)
	if err != nil {
		closeDB()
		return nil, nil, err
	}
	return store, closeDB, nil
}

// passwordCost is the bcrypt cost of the hashes run and runCLI make:
// bcrypt.DefaultCost. Tests lower it (TestMain), as a hash at the default
// cost takes about a second under the race detector.
var passwordCost = bcrypt.DefaultCost

// seedStore seeds users (SEED_USERS) into db and returns the Store on it,
// both hashing at passwordCost.
func seedStore(ctx context.Context, db *gorm.DB, users []config.SeedUser) (*models.Store, error) {
	if err := models.SeedAtCost(ctx, db, seedCredentials(users), passwordCost); err != nil {
		return nil, err
	}
	return models.NewStore(db, models.StoreOptions{HashCost: passwordCost})
}

// seedCredentials are the SEED_USERS as models.Seed takes them.
func seedCredentials(users []config.SeedUser) []models.Account {
	seed := make([]models.Account, len(users))
	for i, u := range users {
		seed[i] = models.Account{Name: u.Name, Password: u.Password, Tier: u.Tier}
	}
	return seed
}

// listUsers prints one line per user: name, tier, created (UTC).
func listUsers(ctx context.Context, store *models.Store, stdout io.Writer) error {
	users, err := store.Users(ctx)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tTIER\tCREATED")
	for _, u := range users {
		fmt.Fprintf(w, "%s\t%s\t%s\n", u.Username, u.Tier, u.CreatedAt.UTC().Format(time.RFC3339))
	}
	return w.Flush()
}

// listKeys prints one line per API key (of name; empty: of everyone): id,
// user, prefix, created and revoked (UTC; "-" while live).
func listKeys(ctx context.Context, store *models.Store, name string, stdout io.Writer) error {
	keys, err := store.APIKeys(ctx, name)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tUSER\tPREFIX\tCREATED\tREVOKED")
	for _, k := range keys {
		user, revoked := cmp.Or(k.User, "(deleted)"), "-"
		if k.RevokedAt != nil {
			revoked = k.RevokedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", k.ID, user, k.Prefix, k.CreatedAt.UTC().Format(time.RFC3339), revoked)
	}
	return w.Flush()
}

// parseCommand checks the command line without touching anything.
func parseCommand(args []string) (command, error) {
	if len(args) == 0 {
		return command{}, fmt.Errorf("%w: no command", errUsage)
	}
	if len(args) == 1 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
		return command{do: "help"}, nil
	}
	if args[0] == "healthcheck" {
		if len(args) != 1 {
			return command{}, fmt.Errorf("%w: healthcheck: want no arguments", errUsage)
		}
		return command{do: "healthcheck"}, nil
	}
	if len(args) < 2 {
		return command{}, fmt.Errorf("%w: unknown command %q", errUsage, strings.Join(args, " "))
	}
	do, rest := args[0]+" "+args[1], args[2:]
	switch do {
	case "users add":
		fs := flag.NewFlagSet(do, flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		tier := fs.String("tier", models.DefaultTier, "")
		pos, err := parseAround(fs, do, rest)
		if err != nil {
			return command{}, err
		}
		if len(pos) != 1 || !username.Valid(pos[0]) {
			return command{}, fmt.Errorf("%w: %s: want one NAME of %s", errUsage, do, username.Rule)
		}
		if !policy.ValidTier(*tier) {
			return command{}, fmt.Errorf("%w: %s: --tier %q: %s", errUsage, do, *tier, tierRule)
		}
		return command{do: do, name: pos[0], tier: *tier}, nil
	case "users set-tier":
		if len(rest) != 2 {
			return command{}, fmt.Errorf("%w: %s: want NAME TIER", errUsage, do)
		}
		name, err := nameArg(do, rest[:1])
		if err != nil {
			return command{}, err
		}
		if !policy.ValidTier(rest[1]) {
			return command{}, fmt.Errorf("%w: %s: TIER %q: %s", errUsage, do, rest[1], tierRule)
		}
		return command{do: do, name: name, tier: rest[1]}, nil
	case "keys create", "users passwd", "users delete":
		name, err := nameArg(do, rest)
		if err != nil {
			return command{}, err
		}
		return command{do: do, name: name}, nil
	case "users list":
		if len(rest) != 0 {
			return command{}, fmt.Errorf("%w: %s: want no arguments", errUsage, do)
		}
		return command{do: do}, nil
	case "keys list":
		if len(rest) == 0 {
			return command{do: do}, nil
		}
		name, err := nameArg(do, rest)
		if err != nil {
			return command{}, err
		}
		return command{do: do, name: name}, nil
	case "quota show", "quota reset", "quota grant":
		return parseQuota(do, rest)
	case "keys revoke":
		if len(rest) != 1 {
			return command{}, fmt.Errorf("%w: %s: want one ID", errUsage, do)
		}
		id, err := strconv.ParseUint(rest[0], 10, 32)
		if err != nil || id == 0 {
			return command{}, fmt.Errorf("%w: %s: ID %q: want a positive integer", errUsage, do, rest[0])
		}
		return command{do: do, id: uint(id)}, nil
	case "overrides set":
		return parseOverrideSet(do, rest)
	case "overrides list":
		if len(rest) != 0 {
			return command{}, fmt.Errorf("%w: %s: want no arguments", errUsage, do)
		}
		return command{do: do}, nil
	case "overrides delete":
		if len(rest) != 1 {
			return command{}, fmt.Errorf("%w: %s: want one ID", errUsage, do)
		}
		id, err := strconv.ParseInt(rest[0], 10, 64)
		if err != nil || id <= 0 {
			return command{}, fmt.Errorf("%w: %s: ID %q: want a positive integer", errUsage, do, rest[0])
		}
		return command{do: do, override: policy.Override{ID: id}}, nil
	}
	return command{}, fmt.Errorf("%w: unknown command %q", errUsage, do)
}

// healthcheck asks the server on port of this host for /healthz, as a
// container's HEALTHCHECK does: a minimal image has no curl. Any answer but
// 200 within 3 seconds is an error.
func healthcheck(ctx context.Context, port int, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	url := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) + "/healthz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: GET %s: status %d, want 200", url, resp.StatusCode)
	}
	_, err = fmt.Fprintf(stdout, "healthy: GET %s answered 200\n", url)
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
		return command{}, fmt.Errorf("%w: %s: want one USER or ip:CIDR", errUsage, do)
	}
	user, prefix, err := policy.ParseOverrideSubject(pos[0])
	if err != nil {
		return command{}, fmt.Errorf("%w: %s: %w", errUsage, do, err)
	}
	if prefix == (netip.Prefix{}) && (!username.Valid(user) || strings.HasPrefix(user, "-")) {
		return command{}, fmt.Errorf("%w: %s: %q: want a USER (%s) or ip:CIDR", errUsage, do, user, username.Rule)
	}
	if *expires < 0 {
		return command{}, fmt.Errorf("%w: %s: --expires %v: want a positive Go duration such as 72h", errUsage, do, *expires)
	}
	o := policy.Override{User: user, Prefix: prefix, Policy: *name, Limit: *limit, Window: *window}
	if *window != 0 && *window%time.Millisecond != 0 {
		return command{}, fmt.Errorf("%w: %s: --window %v: want whole milliseconds", errUsage, do, *window)
	}
	if err := policy.CheckOverride(o); err != nil {
		return command{}, fmt.Errorf("%w: %s: %w (--policy P --limit N [--window W])", errUsage, do, err)
	}
	return command{do: do, override: o, expires: *expires}, nil
}

// setOverride stores cmd's override, once the policy files here say the
// servers can use it: one their policy cannot use (a limit below its cost,
// beyond its algorithm's bound) is refused, a usage error saying why, as
// the servers would leave it out. One whose policy is in neither file is
// stored with a note (it then applies to nothing until one has it).
func setOverride(ctx context.Context, store *models.Store, cfg config.Config, cmd command, stdout io.Writer) error {
	o := cmd.override
	var notes []string
	known := false
	for _, path := range []string{cfg.PolicyFile, cfg.CandidateFile} {
		if path == "" && path == cfg.CandidateFile {
			continue // no candidate file (no policy file: the RATE_LIMIT_* policy)
		}
		policies, _, err := loadPolicies(cfg, path)
		if err != nil || !slices.ContainsFunc(policies, func(p policy.Policy) bool { return p.Name == o.Policy }) {
			continue
		}
		known = true
		// Exactly the servers' check: the override as they take it.
		err = policy.NewSet(policies, cfg.KeyPrefix).OverrideError(o)
		switch {
		case err != nil && path == cfg.PolicyFile:
			return fmt.Errorf("%w: %s: %w: the servers would leave it out (--limit N [--window W])", errUsage, cmd.do, err)
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

// tierRule says what policy.ValidTier accepts, for usage errors.
const tierRule = "want a tier name: a lowercase letter, then up to 31 lowercase letters, digits, '_' or '-'"

// nameArg returns the one NAME argument in rest: a valid user name that does
// not look like a flag.
func nameArg(do string, rest []string) (string, error) {
	if len(rest) != 1 || !username.Valid(rest[0]) || strings.HasPrefix(rest[0], "-") {
		return "", fmt.Errorf("%w: %s: want one NAME of %s", errUsage, do, username.Rule)
	}
	return rest[0], nil
}

// readPassword reads one line from r, without its line ending. An empty
// password or one over bcrypt's 72 bytes is a usage error.
func readPassword(r io.Reader) (string, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password from stdin: %w", err)
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	switch {
	case line == "":
		return "", fmt.Errorf("%w: read password from stdin: empty; pipe or type one line", errUsage)
	case len(line) > 72:
		// bcrypt reads 72 bytes at most: the rest would not count.
		return "", fmt.Errorf("%w: read password from stdin: %d bytes; want at most 72", errUsage, len(line))
	}
	return line, nil
}

// parseAround parses the flags of command do wherever they stand among its
// positional arguments, and returns the positional arguments in order.
func parseAround(fs *flag.FlagSet, do string, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", errUsage, do, err)
		}
		if args = fs.Args(); len(args) == 0 {
			return pos, nil
		}
		pos, args = append(pos, args[0]), args[1:]
	}
}
