package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeIsShortAndLinksEveryPage: the README stays a five-minute read
// (at most 300 lines) and links every page of docs/, so none is orphaned.
func TestReadmeIsShortAndLinksEveryPage(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	if n := strings.Count(readme, "\n"); n > 300 {
		t.Errorf("README.md has %d lines, want at most 300: move detail to docs/", n)
	}
	pages, err := filepath.Glob("docs/*.md")
	if err != nil || len(pages) == 0 {
		t.Fatalf("docs/*.md: %v, %d pages", err, len(pages))
	}
	for _, p := range pages {
		if !strings.Contains(readme, "]("+p+")") {
			t.Errorf("README.md does not link %s", p)
		}
	}
}

// TestDocsLinksResolve: every relative link in README.md and docs/*.md
// names a file that exists and, with a #fragment, a heading of that file.
func TestDocsLinksResolve(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "README.md")
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range link.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path, frag, _ := strings.Cut(target, "#")
			if path == "" {
				path = f
			} else {
				path = filepath.Join(filepath.Dir(f), path)
			}
			info, err := os.Stat(path)
			if err != nil {
				t.Errorf("%s links %s: %v", f, target, err)
				continue
			}
			if info.IsDir() {
				continue // a folder of the repository
			}
			text, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if frag != "" && !hasAnchor(string(text), frag) {
				t.Errorf("%s links %s: %s has no heading #%s", f, target, path, frag)
			}
		}
	}
}

// hasAnchor reports whether markdown has a heading whose GitHub anchor is
// frag (lowercase, punctuation dropped, spaces as hyphens).
func hasAnchor(markdown, frag string) bool {
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	for _, line := range strings.Split(markdown, "\n") {
		h := strings.TrimLeft(line, "#")
		if len(h) == len(line) || !strings.HasPrefix(h, " ") {
			continue
		}
		a := drop.ReplaceAllString(strings.ToLower(strings.TrimSpace(h)), "")
		if strings.ReplaceAll(a, " ", "-") == frag {
			return true
		}
	}
	return false
}
