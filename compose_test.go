package main

import (
	"net/url"
	"os"
	"slices"
	"testing"

	"github.com/go-sql-driver/mysql"
	"go.yaml.in/yaml/v3"

	"tollgate/config"
)

// TestComposeFile: compose.yaml parses, and what "docker compose up" starts
// fits together (docker cannot run here; .ci/container builds and runs the
// image's binary): the service's settings load as at start-up, its DB_DSN
// names the database and user MariaDB creates, its REDIS_URL the Redis
// service, and it waits for both to be healthy.
func TestComposeFile(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	type service struct {
		Build       string            `yaml:"build"`
		Image       string            `yaml:"image"`
		Ports       []string          `yaml:"ports"`
		Environment map[string]string `yaml:"environment"`
		DependsOn   map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
		Healthcheck struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
	}
	var compose struct {
		Services map[string]service `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	app, db, redis := compose.Services["tollgate"], compose.Services["mariadb"], compose.Services["redis"]
	if app.Build != "." || !slices.Contains(app.Ports, "8080:8080") {
		t.Errorf("tollgate: build %q, ports %v; want build . and 8080:8080", app.Build, app.Ports)
	}
	cfg, err := config.Load(func(k string) string { return app.Environment[k] }, configRules())
	if err != nil {
		t.Fatalf("tollgate's environment does not load: %v", err)
	}
	dsn, err := mysql.ParseDSN(cfg.DBDSN)
	if err != nil || cfg.DBDriver != "mysql" {
		t.Fatalf("tollgate: DB_DRIVER %q, DB_DSN %v; want mysql and a DSN", cfg.DBDriver, err)
	}
	want := []string{db.Environment["MARIADB_USER"], db.Environment["MARIADB_PASSWORD"], "mariadb:3306", db.Environment["MARIADB_DATABASE"]}
	if got := []string{dsn.User, dsn.Passwd, dsn.Addr, dsn.DBName}; !slices.Equal(got, want) || want[0] == "" {
		t.Errorf("DB_DSN user, password, address, database = %q; want what the mariadb service creates, %q", got, want)
	}
	if u, err := url.Parse(cfg.RedisURL); err != nil || u.Hostname() != "redis" {
		t.Errorf("REDIS_URL = %q, want the redis service", cfg.RedisURL)
	}
	if len(cfg.SeedUsers) == 0 {
		t.Error("SEED_USERS is empty: nobody could log in")
	}
	for name, s := range map[string]service{"mariadb": db, "redis": redis} {
		if s.Image == "" || len(s.Healthcheck.Test) == 0 || app.DependsOn[name].Condition != "service_healthy" {
			t.Errorf("%s: image %q, healthcheck %v, tollgate waits for %q; want an image, a healthcheck, service_healthy",
				name, s.Image, s.Healthcheck.Test, app.DependsOn[name].Condition)
		}
	}
}
