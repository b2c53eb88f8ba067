package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// TestComposeFile checks docker-compose.yml without a Docker engine: the
// services are there, the worker is built from the Dockerfile with its
// configuration and secrets, and it points at the compose Temporal server.
func TestComposeFile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "docker-compose.yml"))
	require.NoError(t, err)
	var compose struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Build       map[string]string `yaml:"build"`
			EnvFile     string            `yaml:"env_file"`
			Environment map[string]string `yaml:"environment"`
			Volumes     []string          `yaml:"volumes"`
			DependsOn   yaml.Node         `yaml:"depends_on"`
		} `yaml:"services"`
	}
	require.NoError(t, yaml.Unmarshal(b, &compose))

	s := compose.Services
	require.Contains(t, s, "postgresql")
	require.Contains(t, s["postgresql"].Image, "postgres")
	require.Contains(t, s, "temporal")
	require.Contains(t, s["temporal"].Image, "temporalio/")
	require.Equal(t, "postgres12", s["temporal"].Environment["DB"])
	require.Equal(t, "postgresql", s["temporal"].Environment["POSTGRES_SEEDS"])
	require.Contains(t, s, "temporal-ui")
	require.Contains(t, s["temporal-ui"].Image, "temporalio/ui")
	require.Equal(t, "temporal:7233", s["temporal-ui"].Environment["TEMPORAL_ADDRESS"])

	w, ok := s["worker"]
	require.True(t, ok)
	require.Equal(t, "Dockerfile", w.Build["dockerfile"])
	require.Equal(t, ".", w.Build["context"])
	require.Equal(t, ".env", w.EnvFile)
	require.Equal(t, "temporal:7233", w.Environment["TEMPORAL_ADDRESS"])
	require.Contains(t, w.Volumes, "./config.yaml:/etc/optout-sync/config.yaml:ro")
	// The consent ledger: its own database on the compose PostgreSQL.
	require.Contains(t, w.Environment["OPTOUT_LEDGER_URL"], "@postgresql:5432/optout_ledger")
	require.Contains(t, string(b), "CREATE DATABASE optout_ledger;")
	require.Contains(t, w.DependsOn.Content[0].Value+w.DependsOn.Content[2].Value, "postgresql")
	env, err := os.ReadFile(filepath.Join("..", ".env.example"))
	require.NoError(t, err)
	require.Contains(t, string(env), "OPTOUT_LEDGER_KEY=")
	example, err := os.ReadFile(filepath.Join("..", "config.example.yaml"))
	require.NoError(t, err)
	cfg, err := ParseConfig(example, false)
	require.NoError(t, err)
	require.Equal(t, "postgres", string(cfg.Ledger.Driver))
	require.Equal(t, "OPTOUT_LEDGER_URL", cfg.Ledger.URLEnv)

	for _, f := range []string{"Dockerfile", ".env.example", "config.example.yaml"} {
		_, err := os.Stat(filepath.Join("..", f))
		require.NoError(t, err, f)
	}
	docker, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	require.NoError(t, err)
	require.Contains(t, string(docker), "FROM golang:1.26")
	require.Contains(t, string(docker), "./worker")
}
