package routes

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate/algorithms"
	"tollgate/middleware"
)

// static holds the home page: its template, script and style sheet.
//
//go:embed static
var static embed.FS

// asset is one embedded file served under /static/, with a version derived
// from its content: URLs carry it, so browsers may cache them for a year.
type asset struct {
	body        []byte
	contentType string
	version     string
}

// assetTypes lists the files served under /static/ and their content types,
// set explicitly so they never depend on the host's MIME tables.
var assetTypes = map[string]string{
	"app.js":    "text/javascript; charset=utf-8",
	"style.css": "text/css; charset=utf-8",
}

// addPage registers the home page and its assets. They never pass the
// limiters: reading about the limit must not use up the limit. metrics says
// whether this server serves /metrics (METRICS_ADDR moves it elsewhere).
func addPage(r gin.IRoutes, p Summary, live func() ([]string, string), metrics bool) error {
	assets := make(map[string]asset, len(assetTypes))
	for name, ct := range assetTypes {
		body, err := static.ReadFile("static/" + name)
		if err != nil {
			return fmt.Errorf("home page asset: %w", err)
		}
		sum := sha256.Sum256(body)
		assets[name] = asset{body: body, contentType: ct, version: hex.EncodeToString(sum[:6])}
	}
	h, err := home(p, live, metrics, assets)
	if err != nil {
		return err
	}
	r.GET("/", h)
	r.HEAD("/", h)
	r.GET("/static/:name", serveAsset(assets))
	r.HEAD("/static/:name", serveAsset(assets))
	return nil
}

// home renders the page once for each version of the policy: without a
// policy file it is fixed for the life of the process; with one (live set),
// it is rendered again when a reload changes the file.
func home(p Summary, live func() ([]string, string), metrics bool, assets map[string]asset) (gin.HandlerFunc, error) {
	tmpl, err := template.New("index.html").Funcs(template.FuncMap{
		"asset": func(name string) (string, error) {
			a, ok := assets[name]
			if !ok {
				return "", fmt.Errorf("no asset %q", name)
			}
			return "/static/" + name + "?v=" + a.version, nil
		},
	}).ParseFS(static, "static/index.html")
	if err != nil {
		return nil, fmt.Errorf("home page template: %w", err)
	}
	render := func(p Summary) (*renderedPage, error) {
		var buf bytes.Buffer
		if err := tmpl.Execute(&buf, pageData{
			Summary:   p,
			Metrics:   metrics,
			Window:    windowText(p.Window),
			HasBurst:  hasBurst(p.Algorithm),
			Algorithm: strings.ReplaceAll(p.Algorithm, "_", " "),
		}); err != nil {
			return nil, fmt.Errorf("home page template: %w", err)
		}
		return &renderedPage{version: p.SHA256, body: buf.Bytes()}, nil
	}
	if live != nil {
		p.Policies, p.SHA256 = live()
	}
	first, err := render(p)
	if err != nil {
		return nil, err
	}
	var page atomic.Pointer[renderedPage]
	page.Store(first)
	return func(c *gin.Context) {
		pg := page.Load()
		if live != nil {
			if names, version := live(); version != pg.version {
				q := p
				q.Policies, q.SHA256 = names, version
				if next, err := render(q); err == nil { // it rendered before: the same template and kind of data
					page.Store(next)
					pg = next
				}
			}
		}
		c.Header("Content-Security-Policy", "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		c.Header("X-Content-Type-Options", "nosniff")
		c.Header("Cache-Control", "no-cache")
		c.Data(http.StatusOK, "text/html; charset=utf-8", pg.body)
	}, nil
}

// renderedPage is the page for one version of the policy file.
type renderedPage struct {
	version string
	body    []byte
}

// pageData is what index.html shows.
type pageData struct {
	Summary   Summary
	Metrics   bool   // /metrics is served here
	Window    string // "60 seconds"
	HasBurst  bool
	Algorithm string // for reading: "fixed window"
}

// serveAsset answers /static/NAME. Only a URL naming the current version may
// be cached for long; any other is revalidated (ETag).
func serveAsset(assets map[string]asset) gin.HandlerFunc {
	return func(c *gin.Context) {
		a, ok := assets[c.Param("name")]
		if !ok {
			middleware.Fail(c, nil, middleware.ErrNotFound)
			return
		}
		h := c.Writer.Header()
		h.Set("Content-Type", a.contentType)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("ETag", `"`+a.version+`"`)
		h.Set("Cache-Control", "no-cache")
		if c.Query("v") == a.version {
			h.Set("Cache-Control", "public, max-age=31536000, immutable")
		}
		http.ServeContent(c.Writer, c.Request, "", time.Time{}, bytes.NewReader(a.body))
	}
}

// windowText says d for people: "second", "60 seconds", "0.5 seconds".
func windowText(d time.Duration) string {
	if d == time.Second {
		return "second"
	}
	return fmt.Sprintf("%g seconds", d.Seconds())
}

// hasBurst reports whether algorithm has a capacity apart from its rate.
func hasBurst(algorithm string) bool {
	s, err := algorithms.Lookup(algorithm)
	return err == nil && s.Bucket
}
