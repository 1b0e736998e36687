package admin

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"tollgate/models"
)

// runKeys runs a keys command (create, list, revoke).
func runKeys(ctx context.Context, store *models.Store, cmd command, stdout io.Writer) error {
	switch cmd.do {
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
		_, err := fmt.Fprintf(stdout, "revoked key %d\n", cmd.id)
		return err
	}
	return listKeys(ctx, store, cmd.name, stdout)
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
