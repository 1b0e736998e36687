package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium returns the installed Chromium. TEST_BROWSER=1 promises one, so
// its absence fails the test instead of skipping it.
func chromium(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("TEST_BROWSER is set but no chromium is installed (apt-get install chromium)")
	return ""
}

// browserTab starts a headless Chromium of the test's own and returns a tab in
// it, plus the page's uncaught exceptions and CSP violations so far. The
// browser downloads nothing and stops when the test ends.
func browserTab(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	// Bounds the whole browser; every step below has a shorter deadline.
	life, cancelLife := context.WithTimeout(context.Background(), 5*time.Minute)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless,
		chromedp.NoSandbox, // CI runs as root, where the sandbox cannot start
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(960, 900),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(life, opts...)
	tab, cancelTab := chromedp.NewContext(alloc, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser to exit, before TempDir is removed
		cancelLife()
	})

	var mu sync.Mutex
	var problems []string
	messages := chromedp.Console(tab) // starts the browser
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.IsException() || strings.Contains(m.Text, "Content Security Policy") {
				mu.Lock()
				problems = append(problems, m.String())
				mu.Unlock()
			}
		}
	}()
	return tab, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(problems)
	}
}

// shownResult is one row of the page's results table.
type shownResult struct {
	Status    string `json:"status"`
	Remaining string `json:"remaining"`
}

// shownResults reads the results table of the page.
const shownResults = `[...document.querySelectorAll('#results tbody tr')].map(tr => ({
	status: tr.dataset.status,
	remaining: tr.querySelector('.remaining').textContent,
}))`

// step runs actions in tab with a deadline, so a page that never gets there
// fails the test instead of hanging it.
func step(t *testing.T, tab context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// waitRows waits until the page shows n results.
func waitRows(n int) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Poll[bool](
			`document.querySelectorAll('#results tbody tr').length >= `+strconv.Itoa(n),
			chromedp.WithPollingInterval(50*time.Millisecond))(ctx, tg)
		return err
	})
}

func readResults(t *testing.T, tab context.Context) []shownResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 60*time.Second)
	defer cancel()
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]shownResult](shownResults))
	if err != nil {
		t.Fatalf("read results: %v", err)
	}
	return rows
}

func readText(t *testing.T, tab context.Context, id string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 60*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.ID(id)))
	if err != nil {
		t.Fatalf("read #%s: %v", id, err)
	}
	return s
}

// TestBrowserPage drives the home page in headless Chromium: a burst from an
// anonymous visitor meets the default limit (5 per 60s), then a user's
// credentials get a quota of their own and a wrong password gets 401.
func TestBrowserPage(t *testing.T) {
	if os.Getenv("TEST_BROWSER") == "" {
		t.Skip("set TEST_BROWSER=1 to test the page in headless Chromium")
	}
	base := service(t, baseEnv(t, sharedRedis(t)))
	tab, problems := browserTab(t)
	step(t, tab, "load /", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("burst")))

	t.Run("burst", func(t *testing.T) {
		step(t, tab, "burst", chromedp.Click(chromedp.ID("burst")), waitRows(10))
		var got []string
		for _, r := range readResults(t, tab) {
			got = append(got, r.Status+"/"+r.Remaining)
		}
		// Five pass with Remaining counting down, then the limiter answers 429.
		want := []string{"200/4", "200/3", "200/2", "200/1", "200/0", "429/0", "429/0", "429/0", "429/0", "429/0"}
		if !slices.Equal(got, want) {
			t.Errorf("results (status/remaining) = %v, want %v", got, want)
		}
		countdown := readText(t, tab, "countdown")
		if secs, err := strconv.Atoi(strings.TrimSuffix(countdown, " s")); err != nil || secs <= 0 {
			t.Errorf("countdown = %q, want a positive number of seconds", countdown)
		}
		if summary := readText(t, tab, "summary"); !strings.Contains(summary, "5 × 200 OK, 5 × 429 Too Many Requests") {
			t.Errorf("summary = %q, want it to count 5 × 200 and 5 × 429", summary)
		}
	})

	t.Run("credentials", func(t *testing.T) {
		// A user has a quota of their own, apart from the exhausted one of the IP.
		step(t, tab, "send as john_doe",
			chromedp.SendKeys(chromedp.ID("user"), "john_doe"),
			chromedp.SendKeys(chromedp.ID("password"), "EXAMPLE_PASSWORD"),
			chromedp.Click(chromedp.ID("one")),
			waitRows(11),
		)
		// The 401 comes to fetch, which sent the header itself: no login
		// dialog of the browser stands in the way.
		step(t, tab, "send a wrong password",
			chromedp.SetValue(chromedp.ID("password"), "wrong"),
			chromedp.Click(chromedp.ID("one")),
			waitRows(12),
		)
		rows := readResults(t, tab)
		if got := rows[10]; got != (shownResult{Status: "200", Remaining: "4"}) {
			t.Errorf("john_doe's request = %+v, want status 200, remaining 4", got)
		}
		if got := rows[11].Status; got != "401" {
			t.Errorf("wrong password's request status = %s, want 401", got)
		}
	})

	ctx, cancel := context.WithTimeout(tab, 60*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := os.Getenv("TEST_SCREENSHOT")
	if path == "" {
		path = filepath.Join(t.TempDir(), "tollgate.png")
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("save screenshot: %v", err)
	}
	t.Logf("screenshot: %s", path)

	if p := problems(); len(p) > 0 {
		t.Errorf("the page reported problems:\n%s", strings.Join(p, "\n"))
	}
}
