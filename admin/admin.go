// Package admin holds the admin commands (tollgate users|keys|overrides|quota|
// healthcheck): parsed, checked and run on the servers' database and Redis,
// with the settings and openers main gives (Env).
package admin

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"

	"tollgate/algorithms"
	"tollgate/config"
	"tollgate/live"
	"tollgate/models"
	"tollgate/policy"
	"tollgate/username"
)

// ErrUsage is wrapped by Run's errors about the command line itself.
var ErrUsage = errors.New("usage")

// Usage is what the admin commands are; main prints it after a usage error.
const Usage = `usage:
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

// Env is what the admin commands are given by main: the process's
// environment and streams, and the openers main owns.
type Env struct {
	Getenv func(string) string
	Stdin  io.Reader // a password, one line
	Stdout io.Writer // results
	Stderr io.Writer // log lines (quota changes)
	// OpenRedis opens the servers' Redis of cfg, its calls bounded by
	// timeout, and returns the client and how to close it.
	OpenRedis func(ctx context.Context, log *slog.Logger, cfg config.Config, timeout time.Duration) (redis.UniversalClient, func(), error)
	// NewLogger makes the log of LOG_FORMAT and LOG_LEVEL on w, as the
	// server's.
	NewLogger func(w io.Writer, format string, level slog.Level) *slog.Logger
	// Routes are the routes a policy may name (routes.Limited).
	Routes []policy.Route
	// HashCost is the bcrypt cost of the hashes made (0:
	// bcrypt.DefaultCost); tests lower it.
	HashCost int
	// Rules are the checks config.Load takes from other packages, as the
	// server's.
	Rules config.Rules
}

func (e Env) hashCost() int { return cmp.Or(e.HashCost, bcrypt.DefaultCost) }

// LoadPolicies reads the policy file at path (RATE_LIMIT_POLICY_FILE or
// RATE_LIMIT_CANDIDATE_FILE of cfg) as the servers do, routes being those a
// policy may name, and returns its policies and version, or else (no path)
// makes the one policy the RATE_LIMIT_* variables describe.
func LoadPolicies(cfg config.Config, path string, routes []policy.Route) ([]policy.Policy, string, error) {
	if path == "" {
		policies, err := policy.Default(cfg.Algorithm, algorithms.Limit{Requests: cfg.Limit, Window: cfg.Window, Burst: cfg.Burst})
		if err != nil {
			return nil, "", fmt.Errorf("config: %w: %w", config.ErrInvalid, err) // checked by config.Load when the rate limit is on
		}
		return policies, "", nil
	}
	name := "RATE_LIMIT_POLICY_FILE"
	if path == cfg.CandidateFile {
		name = "RATE_LIMIT_CANDIDATE_FILE"
	}
	policies, version, err := live.ReadFile(path, routes)
	if err != nil {
		return nil, "", fmt.Errorf("config: %w: %s=%s: %w", config.ErrInvalid, name, path, err)
	}
	return policies, version, nil
}

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

// Run runs the admin command args (without the program name) on the
// database of the settings env.Getenv gives (DB_DRIVER, DB_DSN), migrating and
// seeding it first as the server does (SEED_USERS), so the CLI sees the
// users the server sees. A password is read from stdin, never from args, so
// it stays out of shell history and process listings. Results go to stdout,
// log lines (quota changes) to stderr.
func Run(ctx context.Context, args []string, env Env) error {
	stdout := env.Stdout
	cmd, err := parseCommand(args)
	if err != nil {
		return err
	}
	if cmd.do == "help" {
		_, err := fmt.Fprint(stdout, Usage)
		return err
	}
	if cmd.do == "healthcheck" {
		cfg, err := config.Load(env.Getenv, env.Rules)
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		return healthcheck(ctx, cfg.Port, stdout)
	}
	var password string
	if cmd.do == "users add" || cmd.do == "users passwd" {
		// Read before connecting: a missing password costs no connection.
		if password, err = readPassword(env.Stdin); err != nil {
			return err
		}
	}
	cfg, err := config.Load(env.Getenv, env.Rules)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if strings.HasPrefix(cmd.do, "quota ") {
		return runQuota(ctx, cmd, cfg, env)
	}
	store, closeDB, err := openUserStore(ctx, cfg, env.hashCost())
	if err != nil {
		return err
	}
	defer closeDB()
	switch {
	case strings.HasPrefix(cmd.do, "users "):
		return runUsers(ctx, store, cfg, cmd, password, stdout)
	case strings.HasPrefix(cmd.do, "keys "):
		return runKeys(ctx, store, cmd, stdout)
	default:
		return runOverrides(ctx, store, cfg, env.Routes, cmd, stdout)
	}
}

// openUserStore opens the database of cfg, migrating and seeding it as the
// server does (hashing at hashCost), and returns the Store on it and how to
// close it.
func openUserStore(ctx context.Context, cfg config.Config, hashCost int) (*models.Store, func(), error) {
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
	store, err := Seed(ctx, db, cfg.SeedUsers, hashCost)
	if err != nil {
		closeDB()
		return nil, nil, err
	}
	return store, closeDB, nil
}

// Seed seeds users (SEED_USERS) into db and returns the Store on it, both
// hashing at cost: the server's seeding, and each admin command's.
func Seed(ctx context.Context, db *gorm.DB, users []config.SeedUser, cost int) (*models.Store, error) {
	if err := models.SeedAtCost(ctx, db, seedCredentials(users), cost); err != nil {
		return nil, err
	}
	return models.NewStore(db, models.StoreOptions{HashCost: cost})
}

// seedCredentials are the SEED_USERS as models.Seed takes them.
func seedCredentials(users []config.SeedUser) []models.Account {
	seed := make([]models.Account, len(users))
	for i, u := range users {
		seed[i] = models.Account{Name: u.Name, Password: u.Password, Tier: u.Tier}
	}
	return seed
}

// parseCommand checks the command line without touching anything.
func parseCommand(args []string) (command, error) {
	if len(args) == 0 {
		return command{}, fmt.Errorf("%w: no command", ErrUsage)
	}
	if len(args) == 1 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
		return command{do: "help"}, nil
	}
	if args[0] == "healthcheck" {
		if len(args) != 1 {
			return command{}, fmt.Errorf("%w: healthcheck: want no arguments", ErrUsage)
		}
		return command{do: "healthcheck"}, nil
	}
	if len(args) < 2 {
		return command{}, fmt.Errorf("%w: unknown command %q", ErrUsage, strings.Join(args, " "))
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
			return command{}, fmt.Errorf("%w: %s: want one NAME of %s", ErrUsage, do, username.Rule)
		}
		if !policy.ValidTier(*tier) {
			return command{}, fmt.Errorf("%w: %s: --tier %q: %s", ErrUsage, do, *tier, tierRule)
		}
		return command{do: do, name: pos[0], tier: *tier}, nil
	case "users set-tier":
		if len(rest) != 2 {
			return command{}, fmt.Errorf("%w: %s: want NAME TIER", ErrUsage, do)
		}
		name, err := nameArg(do, rest[:1])
		if err != nil {
			return command{}, err
		}
		if !policy.ValidTier(rest[1]) {
			return command{}, fmt.Errorf("%w: %s: TIER %q: %s", ErrUsage, do, rest[1], tierRule)
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
			return command{}, fmt.Errorf("%w: %s: want no arguments", ErrUsage, do)
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
			return command{}, fmt.Errorf("%w: %s: want one ID", ErrUsage, do)
		}
		id, err := strconv.ParseUint(rest[0], 10, 32)
		if err != nil || id == 0 {
			return command{}, fmt.Errorf("%w: %s: ID %q: want a positive integer", ErrUsage, do, rest[0])
		}
		return command{do: do, id: uint(id)}, nil
	case "overrides set":
		return parseOverrideSet(do, rest)
	case "overrides list":
		if len(rest) != 0 {
			return command{}, fmt.Errorf("%w: %s: want no arguments", ErrUsage, do)
		}
		return command{do: do}, nil
	case "overrides delete":
		if len(rest) != 1 {
			return command{}, fmt.Errorf("%w: %s: want one ID", ErrUsage, do)
		}
		id, err := strconv.ParseInt(rest[0], 10, 64)
		if err != nil || id <= 0 {
			return command{}, fmt.Errorf("%w: %s: ID %q: want a positive integer", ErrUsage, do, rest[0])
		}
		return command{do: do, override: policy.Override{ID: id}}, nil
	}
	return command{}, fmt.Errorf("%w: unknown command %q", ErrUsage, do)
}

// tierRule says what policy.ValidTier accepts, for usage errors.
const tierRule = "want a tier name: a lowercase letter, then up to 31 lowercase letters, digits, '_' or '-'"

// nameArg returns the one NAME argument in rest: a valid user name that does
// not look like a flag.
func nameArg(do string, rest []string) (string, error) {
	if len(rest) != 1 || !username.Valid(rest[0]) || strings.HasPrefix(rest[0], "-") {
		return "", fmt.Errorf("%w: %s: want one NAME of %s", ErrUsage, do, username.Rule)
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
		return "", fmt.Errorf("%w: read password from stdin: empty; pipe or type one line", ErrUsage)
	case len(line) > 72:
		// bcrypt reads 72 bytes at most: the rest would not count.
		return "", fmt.Errorf("%w: read password from stdin: %d bytes; want at most 72", ErrUsage, len(line))
	}
	return line, nil
}

// parseAround parses the flags of command do wherever they stand among its
// positional arguments, and returns the positional arguments in order.
func parseAround(fs *flag.FlagSet, do string, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrUsage, do, err)
		}
		if args = fs.Args(); len(args) == 0 {
			return pos, nil
		}
		pos, args = append(pos, args[0]), args[1:]
	}
}
