package admin

import (
	"context"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"tollgate/config"
	"tollgate/models"
)

// runUsers runs a users command (add, list, set-tier, passwd, delete);
// password is the one read for add and passwd.
func runUsers(ctx context.Context, store *models.Store, cfg config.Config, cmd command, password string, stdout io.Writer) error {
	var err error
	switch cmd.do {
	case "users add":
		if err := store.CreateUser(ctx, cmd.name, password, cmd.tier); err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "created user %s (tier %s)\n", cmd.name, cmd.tier)
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
	}
	if err == nil && slices.ContainsFunc(cfg.SeedUsers, func(u config.SeedUser) bool { return u.Name == cmd.name }) &&
		(cmd.do == "users passwd" || cmd.do == "users delete" || cmd.do == "users set-tier") {
		_, err = fmt.Fprintf(stdout, "note: SEED_USERS names %s: each start (and each admin command) seeds it again from there\n", cmd.name)
	}
	return err
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
