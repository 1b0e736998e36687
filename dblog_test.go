package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestDatabaseDownLogsThrottled: with the database cut, every credential
// check fails and every overrides refresh too, yet the log gets at most a
// line per kind of failure per 10 seconds (README: database down), not one
// per request: 60 logins and 20 refreshes in about 2s.
func TestDatabaseDownLogsThrottled(t *testing.T) {
	t.Parallel()
	dsn, p := mysqlThroughProxy(t)
	env := baseEnv(t, sharedRedis(t))
	env["DB_DSN"] = dsn
	env["RATE_LIMIT_LIMIT"] = "1000"
	env["RATE_LIMIT_OVERRIDES_REFRESH"] = "100ms"
	env["AUTH_FAIL_LIMIT"] = "0" // every login reaches the database
	base, logs := serviceWithLogs(t, env)
	before := len(strings.Split(logs.String(), "\n"))

	p.setDown(true)
	start := time.Now()
	for i := range 60 {
		// Another password each time: none is remembered.
		if r := get(t, base+"/continents", basic("john_doe", fmt.Sprint("guess", i))); r.status != http.StatusServiceUnavailable {
			t.Fatalf("login %d with the database down: status %d, want 503", i, r.status)
		}
	}
	time.Sleep(max(0, 2*time.Second-time.Since(start))) // 20 refreshes at least
	lines := strings.Split(logs.String(), "\n")[before-1:]
	var loud []string // ERROR or WARN lines
	for _, l := range lines {
		if strings.Contains(l, `"level":"ERROR"`) || strings.Contains(l, `"level":"WARN"`) {
			loud = append(loud, l)
		}
	}
	// One line each at most: the failed credential check, the failed
	// overrides read, the failed queries underneath (the SQL log) and the
	// MySQL driver's broken connections.
	if len(loud) > 4 {
		t.Errorf("%d ERROR/WARN lines for 60 logins and ~20 refreshes with the database down, want at most 4:\n%s",
			len(loud), strings.Join(loud, "\n"))
	}
}
