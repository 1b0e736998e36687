package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"tollgate/config"
	"tollgate/models"
)

// errUsage is wrapped by runCLI's errors about the command line itself.
var errUsage = errors.New("usage")

// usage is what the admin commands are; main prints it after a usage error.
const usage = `usage:
  tollgate                              serve the API (settings from the environment and .env)
  tollgate users add NAME [--tier TIER] add a user; the password is read from stdin (one line)
  tollgate keys create NAME             make an API key for NAME and print it (shown only once)
  tollgate keys revoke ID               revoke the API key ID
`

// command is one parsed admin command line.
type command struct {
	do   string // "users add", "keys create" or "keys revoke"
	name string // users add, keys create
	tier string // users add
	id   uint   // keys revoke
}

// runCLI runs the admin command args (without the program name) on the
// database of the settings getenv gives (DB_DRIVER, DB_DSN), migrating it
// first. A password is read from stdin, never from args, so it stays out of
// shell history and process listings. Results go to stdout.
func runCLI(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout io.Writer) error {
	cmd, err := parseCommand(args)
	if err != nil {
		return err
	}
	if cmd.do == "help" {
		_, err := fmt.Fprint(stdout, usage)
		return err
	}
	var password string
	if cmd.do == "users add" {
		// Read before connecting: a missing password costs no connection.
		if password, err = readPassword(stdin); err != nil {
			return err
		}
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	db, err := models.Open(ctx, slog.New(slog.DiscardHandler), cfg.DBDriver, cfg.DBDSN)
	if err != nil {
		return err
	}
	defer func() {
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.Close()
		}
	}()
	if err := models.Migrate(ctx, db); err != nil {
		return err
	}
	store := models.NewStore(db)
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
	}
	return err
}

// parseCommand checks the command line without touching anything.
func parseCommand(args []string) (command, error) {
	if len(args) == 0 {
		return command{}, fmt.Errorf("%w: no command", errUsage)
	}
	if len(args) == 1 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
		return command{do: "help"}, nil
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
		// Flags may come before or after the name.
		if err := fs.Parse(rest); err != nil {
			return command{}, fmt.Errorf("%w: %s: %w", errUsage, do, err)
		}
		pos := fs.Args()
		if len(pos) > 0 {
			if err := fs.Parse(pos[1:]); err != nil {
				return command{}, fmt.Errorf("%w: %s: %w", errUsage, do, err)
			}
			pos = append(pos[:1], fs.Args()...)
		}
		// A name with ':' could never log in: Basic auth splits at the first one.
		if len(pos) != 1 || pos[0] == "" || len(pos[0]) > 64 || strings.Contains(pos[0], ":") || !utf8.ValidString(pos[0]) {
			return command{}, fmt.Errorf("%w: %s: want one NAME of 1 to 64 bytes of UTF-8, without ':'", errUsage, do)
		}
		if !config.IsTier(*tier) {
			return command{}, fmt.Errorf("%w: %s: --tier %q: want a tier name: a lowercase letter, then up to 31 lowercase letters, digits, '_' or '-'", errUsage, do, *tier)
		}
		return command{do: do, name: pos[0], tier: *tier}, nil
	case "keys create":
		if len(rest) != 1 || rest[0] == "" || strings.HasPrefix(rest[0], "-") {
			return command{}, fmt.Errorf("%w: %s: want one NAME", errUsage, do)
		}
		return command{do: do, name: rest[0]}, nil
	case "keys revoke":
		if len(rest) != 1 {
			return command{}, fmt.Errorf("%w: %s: want one ID", errUsage, do)
		}
		id, err := strconv.ParseUint(rest[0], 10, 32)
		if err != nil || id == 0 {
			return command{}, fmt.Errorf("%w: %s: ID %q: want a positive integer", errUsage, do, rest[0])
		}
		return command{do: do, id: uint(id)}, nil
	}
	return command{}, fmt.Errorf("%w: unknown command %q", errUsage, do)
}

// readPassword reads one line from r, without its line ending.
func readPassword(r io.Reader) (string, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password from stdin: %w", err)
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if line == "" {
		return "", errors.New("read password from stdin: empty; pipe or type one line")
	}
	return line, nil
}
