// Package username is the one rule for a user's name, in a package of its
// own so that everything that checks a name (the database in models, the
// Basic login in auth, SEED_USERS through config, the admin commands) uses
// it without importing the database's package.
package username

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Rule says what Valid accepts, for error messages.
const Rule = "1 to 64 bytes of UTF-8 without ':' or control characters"

// Valid reports whether name can be a user's name: 1 to 64 bytes of UTF-8
// (the users table's column size) without ':' (HTTP Basic splits at the
// first one) or control characters (C0 such as NUL, tab and newline, DEL,
// C1), which would forge log lines or make two names look alike. Names are
// compared byte for byte: one that differs in case, accents or spaces is
// another name.
func Valid(name string) bool {
	if name == "" || len(name) > 64 || !utf8.ValidString(name) || strings.ContainsRune(name, ':') {
		return false
	}
	return strings.IndexFunc(name, unicode.IsControl) < 0
}
