package main

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/worker/codec"
)

// The checks below read docker-compose.yml, the Dockerfile it builds, the
// files it mounts and the worker's configuration, and check that they agree
// with each other, without a Docker engine. Nothing here asserts a literal
// value of the compose file: every check is a property a broken file fails
// (a dependency that is not defined, a variable the worker needs that
// nothing sets, an address that points nowhere, a database nobody creates).
// dcCheck returns the problems as sentences, so that the negative test can
// break the project in memory and see each check fire.

const dcComposeFile = "docker-compose.yml"

// TestComposeFile checks docker-compose.yml for consistency with itself,
// the Dockerfile, .env.example and the worker's configuration, and with
// what the cluster test proves (cluster_setup_test.go).
func TestComposeFile(t *testing.T) {
	fsys := os.DirFS("..")
	c := dcLoad(t, fsys)
	require.Empty(t, dcCheck(fsys, c))
}

// TestComposeChecksAreNotVacuous breaks the project in one place at a time,
// in memory, and requires the checker to name the breakage.
func TestComposeChecksAreNotVacuous(t *testing.T) {
	base := os.DirFS("..")
	// edit returns name's content with old replaced; old must be there, so
	// that a mutation cannot silently stop mutating anything.
	edit := func(t *testing.T, name, old, new string) *string {
		b, err := fs.ReadFile(base, name)
		require.NoError(t, err)
		require.Contains(t, string(b), old, "%s: the mutation's anchor is gone", name)
		s := strings.Replace(string(b), old, new, 1)
		return &s
	}
	worker := func(c *dcModel) *dcService { return c.Services[dcWorkerName(base, c)] }

	for _, tc := range []struct {
		name   string
		mutate func(t *testing.T, c *dcModel, files map[string]*string)
		want   string
	}{
		{"depends_on target removed", func(t *testing.T, c *dcModel, _ map[string]*string) {
			delete(c.Services, "postgresql")
		}, `depends on "postgresql", which is not defined`},
		{"depends_on cycle", func(t *testing.T, c *dcModel, _ map[string]*string) {
			c.Services["postgresql"].DependsOn[dcWorkerName(base, c)] = "service_started"
		}, "depends_on: cycle"},
		{"service_healthy without healthcheck", func(t *testing.T, c *dcModel, _ map[string]*string) {
			c.Services["postgresql"].Healthcheck = nil
		}, `"postgresql" has no healthcheck`},
		{"unknown depends_on condition", func(t *testing.T, c *dcModel, _ map[string]*string) {
			worker(c).DependsOn["postgresql"] = "service_ready"
		}, `unknown condition "service_ready"`},
		{"ledger URL variable dropped", func(t *testing.T, c *dcModel, _ map[string]*string) {
			delete(worker(c).Environment, "OPTOUT_LEDGER_URL")
		}, "OPTOUT_LEDGER_URL"},
		{"credential missing from the env file", func(t *testing.T, c *dcModel, files map[string]*string) {
			files[".env.example"] = edit(t, ".env.example", "\nMAILCHIMP_API_KEY=", "\n# MAILCHIMP_API_KEY=")
		}, `needs "MAILCHIMP_API_KEY"`},
		{"config names a credential nothing sets", func(t *testing.T, c *dcModel, files map[string]*string) {
			files["config.example.yaml"] = edit(t, "config.example.yaml", "clientSecretEnv: SALESFORCE_CLIENT_SECRET", "clientSecretEnv: SF_SECRET")
		}, `needs "SF_SECRET"`},
		{"default ledger key variable", func(t *testing.T, c *dcModel, files map[string]*string) {
			files["config.example.yaml"] = edit(t, "config.example.yaml", "keyEnv: OPTOUT_LEDGER_KEY", "")
			files[".env.example"] = edit(t, ".env.example", "\nOPTOUT_LEDGER_KEY=", "\n#")
		}, `needs "OPTOUT_LEDGER_KEY"`},
		{"codec keys missing from the env file", func(t *testing.T, c *dcModel, files map[string]*string) {
			files[".env.example"] = edit(t, ".env.example", "\nOPTOUT_CODEC_KEYS=", "\n# OPTOUT_CODEC_KEYS=")
		}, `needs "OPTOUT_CODEC_KEYS"`},
		{"TEMPORAL_ADDRESS dropped", func(t *testing.T, c *dcModel, _ map[string]*string) {
			delete(worker(c).Environment, "TEMPORAL_ADDRESS")
		}, `needs "TEMPORAL_ADDRESS"`},
		{"env file value shadowed by environment", func(t *testing.T, c *dcModel, files map[string]*string) {
			files[".env.example"] = edit(t, ".env.example", "# TEMPORAL_ADDRESS=", "TEMPORAL_ADDRESS=")
		}, "sets TEMPORAL_ADDRESS, but its environment sets it too"},
		{"config not mounted", func(t *testing.T, c *dcModel, _ map[string]*string) {
			w := worker(c)
			w.Mounts = slices.DeleteFunc(w.Mounts, func(m dcMount) bool { return strings.HasSuffix(m.Target, ".yaml") })
		}, "is not mounted"},
		{"config path not given", func(t *testing.T, c *dcModel, files map[string]*string) {
			worker(c).Command = []string{}
			delete(worker(c).Environment, "OPTOUT_CONFIG")
			files["Dockerfile"] = edit(t, "Dockerfile", `CMD ["-config", "/etc/optout-sync/config.yaml"]`, "")
		}, "no configuration file"},
		{"unknown worker flag", func(t *testing.T, c *dcModel, _ map[string]*string) {
			worker(c).Command = []string{"-confg", "/etc/optout-sync/config.yaml"}
		}, `flag "-confg"`},
		{"config the worker refuses", func(t *testing.T, c *dcModel, files map[string]*string) {
			files["config.example.yaml"] = edit(t, "config.example.yaml", "schedule: 15m", "schedule: 15m\n    scheduel: 15m")
		}, "the worker refuses"},
		{"secret file outside the mounts", func(t *testing.T, c *dcModel, files map[string]*string) {
			files["config.example.yaml"] = edit(t, "config.example.yaml", "keyEnv: OPTOUT_LEDGER_KEY", "keyFile: /run/secrets/ledger.key")
		}, `"/run/secrets/ledger.key", which no volume of`},
		{"sqlite ledger on no volume", func(t *testing.T, c *dcModel, files map[string]*string) {
			files["config.example.yaml"] = edit(t, "config.example.yaml", "driver: postgres", "driver: sqlite")
			y := *files["config.example.yaml"]
			y = strings.Replace(y, "urlEnv: OPTOUT_LEDGER_URL", "path: /var/lib/optout-sync/ledger.db", 1)
			files["config.example.yaml"] = &y
		}, "is on no writable volume"},
		{"Temporal address names no service", func(t *testing.T, c *dcModel, _ map[string]*string) {
			worker(c).Environment["TEMPORAL_ADDRESS"] = "temporal-frontend:7233"
		}, `"temporal-frontend", which is not a service`},
		{"Temporal address on a port nobody listens on", func(t *testing.T, c *dcModel, _ map[string]*string) {
			worker(c).Environment["TEMPORAL_ADDRESS"] = "temporal:7234"
		}, "port 7234"},
		{"namespace the setup does not create", func(t *testing.T, c *dcModel, _ map[string]*string) {
			worker(c).Environment["TEMPORAL_NAMESPACE"] = "optout"
		}, `namespace "optout"`},
		{"no depends_on on an addressed service", func(t *testing.T, c *dcModel, _ map[string]*string) {
			delete(c.Services["temporal-ui"].DependsOn, "temporal")
		}, `"temporal-ui" connects to "temporal"`},
		{"ledger database not created", func(t *testing.T, c *dcModel, _ map[string]*string) {
			w := worker(c)
			w.Environment["OPTOUT_LEDGER_URL"] = strings.Replace(w.Environment["OPTOUT_LEDGER_URL"], "/optout_ledger", "/ledger", 1)
		}, `database "ledger"`},
		{"init script the entrypoint skips", func(t *testing.T, c *dcModel, _ map[string]*string) {
			p := c.Services["postgresql"]
			for i, m := range p.Mounts {
				if strings.HasPrefix(m.Target, "/docker-entrypoint-initdb.d/") {
					p.Mounts[i].Target = strings.TrimSuffix(m.Target, ".sql") + ".txt"
				}
			}
		}, `database "optout_ledger"`},
		{"ledger user unknown to PostgreSQL", func(t *testing.T, c *dcModel, _ map[string]*string) {
			c.Services["postgresql"].Environment["POSTGRES_USER"] = "postgres"
		}, `user "temporal" is not a role`},
		{"Temporal's database port", func(t *testing.T, c *dcModel, _ map[string]*string) {
			c.Services["temporal"].Environment["DB_PORT"] = "5433"
		}, "port 5433"},
		{"schema tool's database credentials", func(t *testing.T, c *dcModel, _ map[string]*string) {
			c.Services["temporal-schema"].Environment["SQL_PASSWORD"] = "postgres"
		}, `"temporal-schema" logs in to postgresql as user "temporal"`},
		// What the cluster test proves (cluster_setup_test.go).
		{"server version other than go.mod's", func(t *testing.T, c *dcModel, _ map[string]*string) {
			c.Services["temporal"].Image = "temporalio/server:1.31.0"
		}, "runs temporalio/server:1.31.0, but go.mod's go.temporal.io/server is"},
		{"tools version other than go.mod's", func(t *testing.T, c *dcModel, _ map[string]*string) {
			c.Services["temporal-namespace"].Image = "temporalio/admin-tools:latest"
		}, "runs temporalio/admin-tools:latest, but go.mod's"},
		{"server image the test does not run", func(t *testing.T, c *dcModel, _ map[string]*string) {
			c.Services["temporal"].Image = "temporalio/auto-setup:1.29.0"
		}, "want one temporalio/server service"},
		{"another persistence plugin", func(t *testing.T, c *dcModel, _ map[string]*string) {
			c.Services["temporal"].Environment["DB"] = "postgres12_pgx"
		}, `DB "postgres12_pgx"`},
		{"Elasticsearch visibility", func(t *testing.T, c *dcModel, _ map[string]*string) {
			c.Services["temporal"].Environment["ENABLE_ES"] = "true"
		}, "SQL visibility"},
		{"dynamic configuration not mounted", func(t *testing.T, c *dcModel, _ map[string]*string) {
			c.Services["temporal"].Mounts = nil
		}, "dynamic configuration /etc/temporal/config/dynamicconfig/docker.yaml is not mounted"},
		{"dynamic configuration that is not YAML", func(t *testing.T, c *dcModel, files map[string]*string) {
			files[dcComposeFile] = edit(t, dcComposeFile, "    content: |\n      {}\n", "    content: |\n      {frontend\n")
		}, "the dynamic configuration /etc/temporal/config/dynamicconfig/docker.yaml (config temporal-dynamicconfig): yaml:"},
		{"dynamic configuration elsewhere", func(t *testing.T, c *dcModel, _ map[string]*string) {
			c.Services["temporal"].Environment["DYNAMIC_CONFIG_FILE_PATH"] = "config/dynamicconfig/development-sql.yaml"
		}, "/etc/temporal/config/dynamicconfig/development-sql.yaml is not mounted"},
		{"schema step missing", func(t *testing.T, c *dcModel, files map[string]*string) {
			files[dcComposeFile] = edit(t, dcComposeFile, "        temporal-sql-tool --plugin postgres12 --db temporal_visibility update-schema --schema-name postgresql/v12/visibility\n", "")
		}, "does not run `temporal-sql-tool --plugin postgres12 --db temporal_visibility update-schema --schema-name postgresql/v12/visibility`"},
		{"schema steps out of order", func(t *testing.T, c *dcModel, files map[string]*string) {
			files[dcComposeFile] = edit(t, dcComposeFile, "        temporal-sql-tool --plugin postgres12 --db temporal create\n", "")
			y := strings.Replace(*files[dcComposeFile], "--schema-name postgresql/v12/temporal\n", "--schema-name postgresql/v12/temporal\n        temporal-sql-tool --plugin postgres12 --db temporal create\n", 1)
			files[dcComposeFile] = &y
		}, "runs `temporal-sql-tool --plugin postgres12 --db temporal setup-schema -v 0.0` too early"},
		{"schema set up in a loop", func(t *testing.T, c *dcModel, files map[string]*string) {
			files[dcComposeFile] = edit(t, dcComposeFile, "--db temporal create", "--db $${DB:-temporal} create")
		}, "no service runs `temporal-sql-tool --plugin postgres12 --db temporal create`"},
		{"server reads databases the schema service does not set up", func(t *testing.T, c *dcModel, _ map[string]*string) {
			c.Services["temporal"].Environment["VISIBILITY_DBNAME"] = "visibility"
		}, `"temporal-schema" does not run ` + "`temporal-sql-tool --plugin postgres12 --db visibility create`"},
		{"schema on another PostgreSQL", func(t *testing.T, c *dcModel, _ map[string]*string) {
			c.Services["temporal"].Environment["POSTGRES_SEEDS"] = "db.example.com"
		}, `sets up the schema on "postgresql", but "temporal" reads "db.example.com"`},
		{"server does not wait for the schema", func(t *testing.T, c *dcModel, _ map[string]*string) {
			c.Services["temporal"].DependsOn["temporal-schema"] = "service_started"
		}, `"temporal" must wait for "temporal-schema" to complete`},
		{"namespace not created", func(t *testing.T, c *dcModel, files map[string]*string) {
			files[dcComposeFile] = edit(t, dcComposeFile, "temporal operator namespace create --namespace optout-sync", "temporal operator namespace create --namespace default")
		}, "no service runs `temporal operator namespace create --namespace optout-sync --retention 168h`"},
		{"search attribute of another type", func(t *testing.T, c *dcModel, files map[string]*string) {
			files[dcComposeFile] = edit(t, dcComposeFile, "--name OptOutIntegration --type Keyword", "--name OptOutIntegration --type Text")
		}, "--name OptOutIntegration --type Keyword`"},
		{"namespace created before the server runs", func(t *testing.T, c *dcModel, _ map[string]*string) {
			delete(c.Services["temporal-namespace"].DependsOn, "temporal")
		}, `"temporal-namespace" creates the namespace, but does not wait for "temporal"`},
		{"worker does not wait for the namespace", func(t *testing.T, c *dcModel, _ map[string]*string) {
			delete(worker(c).DependsOn, "temporal-namespace")
		}, `must wait for "temporal-namespace" to complete`},
		{"host port collision", func(t *testing.T, c *dcModel, _ map[string]*string) {
			ui := c.Services["temporal-ui"]
			ui.Ports[0].Host = 7233
		}, "host port 7233/tcp is published by both"},
		{"published port the container does not listen on", func(t *testing.T, c *dcModel, _ map[string]*string) {
			c.Services["temporal-ui"].Ports[0].Container = 3000
		}, "container port 3000"},
		{"bind mount of a missing path", func(t *testing.T, c *dcModel, _ map[string]*string) {
			w := worker(c)
			w.Mounts = append(w.Mounts, dcMount{Kind: "bind", Source: "no-such-dir", Target: "/x"})
		}, `"no-such-dir"`},
		{"undeclared named volume", func(t *testing.T, c *dcModel, _ map[string]*string) {
			delete(c.Volumes, "postgresql-data")
		}, `named volume "postgresql-data"`},
		{"undeclared config", func(t *testing.T, c *dcModel, _ map[string]*string) {
			delete(c.Configs, "ledger-database")
		}, `config "ledger-database"`},
		{"Dockerfile missing", func(t *testing.T, c *dcModel, files map[string]*string) {
			files["Dockerfile"] = nil
		}, "Dockerfile"},
		{"Dockerfile builds no worker", func(t *testing.T, c *dcModel, files map[string]*string) {
			files["Dockerfile"] = edit(t, "Dockerfile", "-o /out/worker ./worker", "-o /out/worker ./starter")
		}, "no service builds ./worker"},
		{"final stage runs the starter", func(t *testing.T, c *dcModel, files map[string]*string) {
			files["Dockerfile"] = edit(t, "Dockerfile", `ENTRYPOINT ["/usr/local/bin/worker"]`, `ENTRYPOINT ["/usr/local/bin/starter"]`)
		}, "does not run the worker"},
		{"worker binary not copied", func(t *testing.T, c *dcModel, files map[string]*string) {
			files["Dockerfile"] = edit(t, "Dockerfile", "COPY --from=build /out/worker /out/starter", "COPY --from=build /out/starter")
		}, "does not run the worker"},
		{"cgo binary on a static image", func(t *testing.T, c *dcModel, files map[string]*string) {
			files["Dockerfile"] = edit(t, "Dockerfile", "CGO_ENABLED=0 go build -tags nodev -trimpath -ldflags=\"-s -w\" -o /out/worker", "go build -tags nodev -o /out/worker")
		}, "CGO_ENABLED=0"},
		{"worker built with the dev mode", func(t *testing.T, c *dcModel, files map[string]*string) {
			files["Dockerfile"] = edit(t, "Dockerfile", "go build -tags nodev -trimpath", "go build -trimpath")
		}, "not the production build"},
		{"Go image older than go.mod", func(t *testing.T, c *dcModel, files map[string]*string) {
			files["Dockerfile"] = edit(t, "Dockerfile", "FROM golang:1.26 AS build", "FROM golang:1.22 AS build")
		}, "golang:1.22"},
		{"source excluded from the build context", func(t *testing.T, c *dcModel, files map[string]*string) {
			files[".dockerignore"] = edit(t, ".dockerignore", "secrets", "secrets\ngo.sum")
		}, `"go.sum"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]*string{}
			c := dcLoad(t, base)
			tc.mutate(t, c, files)
			fsys := dcOverlay{base: base, files: files}
			if _, ok := files[dcComposeFile]; ok {
				c = dcLoad(t, fsys) // a text mutation of the compose file itself
			}
			problems := dcCheck(fsys, c)
			t.Log(strings.Join(problems, "\n"))
			require.NotEmpty(t, problems)
			require.True(t, slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }),
				"want a problem containing %q, got:\n%s", tc.want, strings.Join(problems, "\n"))
		})
	}

	// The compose file is read, not only the model: a YAML edit is seen too.
	t.Run("compose text", func(t *testing.T) {
		fsys := dcOverlay{base: base, files: map[string]*string{
			dcComposeFile: edit(t, dcComposeFile, "TEMPORAL_ADDRESS: temporal:7233\n      TEMPORAL_NAMESPACE", "TEMPORAL_ADDRESS: temporal:7000\n      TEMPORAL_NAMESPACE"),
		}}
		problems := dcCheck(fsys, dcLoad(t, fsys))
		require.True(t, slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, "port 7000") }), problems)
	})
}

// TestComposeHarmlessEdits: rewriting the compose file in another
// syntax, or changing a value consistently, passes the checks.
func TestComposeHarmlessEdits(t *testing.T) {
	base := os.DirFS("..")
	orig, err := fs.ReadFile(base, dcComposeFile)
	require.NoError(t, err)
	for name, edits := range map[string][][2]string{
		"environment as a list": {{
			"    environment:\n      TEMPORAL_ADDRESS: temporal:7233\n      TEMPORAL_NAMESPACE: optout-sync\n",
			"    environment:\n      - TEMPORAL_ADDRESS=temporal:7233\n      - TEMPORAL_NAMESPACE=optout-sync\n",
		}, {
			"      OPTOUT_LEDGER_URL: postgres:",
			"      - OPTOUT_LEDGER_URL=postgres:",
		}, {
			"      OPTOUT_CONFIG: /etc/",
			"      - OPTOUT_CONFIG=/etc/",
		}},
		"interpolated value": {{
			"TEMPORAL_ADDRESS: temporal:7233\n      TEMPORAL_NAMESPACE",
			"TEMPORAL_ADDRESS: ${OPTOUT_TEMPORAL_ADDRESS:-temporal:7233}\n      TEMPORAL_NAMESPACE",
		}},
		"depends_on as a list, ports in long syntax, bound to localhost": {{
			"    depends_on:\n      - temporal\n",
			"    depends_on: [temporal]\n",
		}, {
			`      - "8080:8080"`,
			"      - target: 8080\n        published: \"8080\"\n        host_ip: 127.0.0.1",
		}},
		"configuration elsewhere in the container": {{
			`command: ["-config", "/etc/optout-sync/config.yaml"]`,
			`command: -config=/config/worker.yaml`,
		}, {
			"./config.yaml:/etc/optout-sync/config.yaml:ro",
			"./config.yaml:/config/worker.yaml:ro",
		}},
		"new image versions":                  {{"postgres:16", "postgres:17"}, {"ui:2.39.0", "ui:2.40.0"}},
		"another shell for the setup scripts": {{`entrypoint: ["/bin/sh", "-ec"]`, `entrypoint: ["sh", "-euc"]`}},
	} {
		t.Run(name, func(t *testing.T) {
			s := string(orig)
			for _, e := range edits {
				require.Contains(t, s, e[0])
				s = strings.Replace(s, e[0], e[1], 1)
			}
			fsys := dcOverlay{base: base, files: map[string]*string{dcComposeFile: &s}}
			require.Empty(t, dcCheck(fsys, dcLoad(t, fsys)))
		})
	}
}

// dcOverlay is the repository with some files replaced (nil: removed).
type dcOverlay struct {
	base  fs.FS
	files map[string]*string
}

func (o dcOverlay) Open(name string) (fs.File, error) {
	if s, ok := o.files[name]; ok {
		if s == nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		}
		return fstest.MapFS{name: {Data: []byte(*s)}}.Open(name)
	}
	return o.base.Open(name)
}

// ---- The compose model -------------------------------------------------

// dcModel is the part of a compose file the checks read, with the
// alternative syntaxes (lists or maps, short or long forms) normalized.
type dcModel struct {
	Services map[string]*dcService
	Volumes  map[string]bool     // declared named volumes
	Configs  map[string]dcConfig // declared configs
	Networks map[string]bool     // declared networks (and "default")
	Problems []string            // what could not be read
}

type dcConfig struct{ File, Content string }

type dcService struct {
	Image       string
	Build       *dcBuild
	DependsOn   map[string]string // service -> condition
	Environment map[string]string
	EnvFiles    []dcEnvFile
	Ports       []dcPort
	Expose      []int
	Mounts      []dcMount // volumes and configs
	Healthcheck []string  // the test's words; nil: none, or disabled
	Command     []string  // nil: the image's
	Entrypoint  []string  // nil: the image's
	Networks    []string
	NetworkMode string
}

type dcBuild struct{ Context, Dockerfile string }

type dcEnvFile struct {
	Path     string
	Required bool
}

type dcPort struct {
	HostIP    string
	Host      int // 0: not published on a fixed host port
	Container int
	Protocol  string
}

type dcMount struct {
	Kind     string // bind, volume, config, tmpfs
	Source   string // a path relative to the project (bind), a volume or a config name
	Target   string
	ReadOnly bool
}

// dcLoad reads and normalizes the compose file of fsys; it fails the test
// when the file cannot be read at all.
func dcLoad(t *testing.T, fsys fs.FS) *dcModel {
	t.Helper()
	b, err := fs.ReadFile(fsys, dcComposeFile)
	require.NoError(t, err)
	// Compose interpolates ${VAR} from the project's .env.
	vars, _, _ := dcReadEnvFile(fsys, ".env")
	c, err := dcParse(b, vars)
	require.NoError(t, err)
	return c
}

func dcParse(b []byte, vars map[string]string) (*dcModel, error) {
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, err
	}
	raw, _ = dcInterpolate(raw, vars).(map[string]any)
	c := &dcModel{
		Services: map[string]*dcService{},
		Volumes:  map[string]bool{},
		Configs:  map[string]dcConfig{},
		Networks: map[string]bool{"default": true},
	}
	bad := func(format string, args ...any) { c.Problems = append(c.Problems, fmt.Sprintf(format, args...)) }
	for name := range dcMap(raw["volumes"]) {
		c.Volumes[name] = true
	}
	for name := range dcMap(raw["networks"]) {
		c.Networks[name] = true
	}
	for name, v := range dcMap(raw["configs"]) {
		m := dcMap(v)
		c.Configs[name] = dcConfig{File: dcStr(m["file"]), Content: dcStr(m["content"])}
	}
	services := dcMap(raw["services"])
	if len(services) == 0 {
		return nil, errors.New("no services")
	}
	for name, v := range services {
		m := dcMap(v)
		s := &dcService{
			Image:       dcStr(m["image"]),
			DependsOn:   map[string]string{},
			Environment: map[string]string{},
			NetworkMode: dcStr(m["network_mode"]),
		}
		c.Services[name] = s
		switch b := m["build"].(type) {
		case nil:
		case string:
			s.Build = &dcBuild{Context: b, Dockerfile: "Dockerfile"}
		case map[string]any:
			s.Build = &dcBuild{Context: dcStr(b["context"]), Dockerfile: dcStr(b["dockerfile"])}
			if s.Build.Context == "" {
				s.Build.Context = "."
			}
			if s.Build.Dockerfile == "" {
				s.Build.Dockerfile = "Dockerfile"
			}
		default:
			bad("service %q: build: unexpected %T", name, b)
		}
		switch d := m["depends_on"].(type) {
		case nil:
		case []any:
			for _, x := range d {
				s.DependsOn[dcStr(x)] = "service_started"
			}
		case map[string]any:
			for dep, x := range d {
				cond := dcStr(dcMap(x)["condition"])
				if cond == "" {
					cond = "service_started"
				}
				s.DependsOn[dep] = cond
			}
		default:
			bad("service %q: depends_on: unexpected %T", name, d)
		}
		switch e := m["environment"].(type) {
		case nil:
		case []any:
			for _, x := range e {
				k, v, _ := strings.Cut(dcStr(x), "=")
				s.Environment[k] = v
			}
		case map[string]any:
			for k, x := range e {
				s.Environment[k] = dcStr(x)
			}
		default:
			bad("service %q: environment: unexpected %T", name, e)
		}
		switch e := m["env_file"].(type) {
		case nil:
		case string:
			s.EnvFiles = append(s.EnvFiles, dcEnvFile{Path: e, Required: true})
		case []any:
			for _, x := range e {
				if f, ok := x.(map[string]any); ok {
					req, set := f["required"].(bool)
					s.EnvFiles = append(s.EnvFiles, dcEnvFile{Path: dcStr(f["path"]), Required: req || !set})
				} else {
					s.EnvFiles = append(s.EnvFiles, dcEnvFile{Path: dcStr(x), Required: true})
				}
			}
		default:
			bad("service %q: env_file: unexpected %T", name, e)
		}
		for _, x := range dcList(m["ports"]) {
			ports, err := dcParsePort(x)
			if err != nil {
				bad("service %q: ports: %v", name, err)
			}
			s.Ports = append(s.Ports, ports...)
		}
		for _, x := range dcList(m["expose"]) {
			p, err := strconv.Atoi(strings.Split(dcStr(x), "/")[0])
			if err != nil {
				bad("service %q: expose: %v", name, err)
			}
			s.Expose = append(s.Expose, p)
		}
		for _, x := range dcList(m["volumes"]) {
			mt, err := dcParseVolume(x)
			if err != nil {
				bad("service %q: volumes: %v", name, err)
				continue
			}
			s.Mounts = append(s.Mounts, mt)
		}
		for _, x := range dcList(m["configs"]) {
			mt := dcMount{Kind: "config", ReadOnly: true}
			if f, ok := x.(map[string]any); ok {
				mt.Source, mt.Target = dcStr(f["source"]), dcStr(f["target"])
			} else {
				mt.Source = dcStr(x)
			}
			if mt.Target == "" {
				mt.Target = "/" + mt.Source
			}
			s.Mounts = append(s.Mounts, mt)
		}
		if h := dcMap(m["healthcheck"]); h != nil && h["disable"] != true {
			var test []string
			switch x := h["test"].(type) {
			case string:
				test = dcShellFields(x)
			case []any:
				for _, w := range x {
					test = append(test, dcStr(w))
				}
			}
			switch {
			case len(test) == 0 || test[0] == "NONE":
				test = nil
			case test[0] == "CMD":
				test = test[1:]
			case test[0] == "CMD-SHELL" && len(test) == 2:
				test = dcShellFields(test[1])
			}
			s.Healthcheck = test
		}
		s.Command = dcCommand(m["command"])
		s.Entrypoint = dcCommand(m["entrypoint"])
		switch n := m["networks"].(type) {
		case nil:
			s.Networks = []string{"default"}
		case []any:
			for _, x := range n {
				s.Networks = append(s.Networks, dcStr(x))
			}
		case map[string]any:
			for k := range n {
				s.Networks = append(s.Networks, k)
			}
		}
	}
	return c, nil
}

func dcMap(v any) map[string]any { m, _ := v.(map[string]any); return m }

func dcList(v any) []any { l, _ := v.([]any); return l }

func dcStr(v any) string {
	if v == nil {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

func dcCommand(v any) []string {
	switch x := v.(type) {
	case string:
		return dcShellFields(x)
	case []any:
		out := []string{}
		for _, w := range x {
			out = append(out, dcStr(w))
		}
		return out
	}
	return nil
}

var dcVarRef = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

// dcInterpolate substitutes ${VAR}, ${VAR:-default} and the like in every
// string of the tree, as compose does.
func dcInterpolate(v any, vars map[string]string) any {
	switch x := v.(type) {
	case string:
		return dcVarRef.ReplaceAllStringFunc(x, func(ref string) string {
			if ref == "$$" {
				return "$"
			}
			g := dcVarRef.FindStringSubmatch(ref)
			name := g[1] + g[4]
			val, set := vars[name]
			switch g[2] {
			case ":-":
				if val == "" {
					return g[3]
				}
			case "-":
				if !set {
					return g[3]
				}
			case ":+":
				if val != "" {
					return g[3]
				}
				return ""
			case "+":
				if set {
					return g[3]
				}
				return ""
			}
			return val
		})
	case map[string]any:
		for k, e := range x {
			x[k] = dcInterpolate(e, vars)
		}
	case []any:
		for i, e := range x {
			x[i] = dcInterpolate(e, vars)
		}
	}
	return v
}

// dcParsePort reads a ports entry: "[ip:][host:]container[/proto]" (each
// port may be a range) or the long syntax.
func dcParsePort(v any) ([]dcPort, error) {
	if m, ok := v.(map[string]any); ok {
		target, err := strconv.Atoi(dcStr(m["target"]))
		if err != nil {
			return nil, fmt.Errorf("target: %w", err)
		}
		p := dcPort{HostIP: dcStr(m["host_ip"]), Container: target, Protocol: dcStr(m["protocol"])}
		if p.Protocol == "" {
			p.Protocol = "tcp"
		}
		if pub := dcStr(m["published"]); pub != "" {
			lo, hi, err := dcPortRange(pub)
			if err != nil {
				return nil, err
			}
			var out []dcPort
			for h := lo; h <= hi; h++ {
				q := p
				q.Host = h
				out = append(out, q)
			}
			return out, nil
		}
		return []dcPort{p}, nil
	}
	s := dcStr(v)
	spec, proto, _ := strings.Cut(s, "/")
	if proto == "" {
		proto = "tcp"
	}
	var ip string
	if strings.HasPrefix(spec, "[") { // [::1]:8080:80
		end := strings.Index(spec, "]:")
		if end < 0 {
			return nil, fmt.Errorf("%q: bad IPv6 address", s)
		}
		ip, spec = spec[1:end], spec[end+2:]
	}
	parts := strings.Split(spec, ":")
	var host string
	switch len(parts) {
	case 1:
	case 2:
		host = parts[0]
	case 3:
		ip, host = parts[0], parts[1]
	default:
		return nil, fmt.Errorf("%q: cannot read", s)
	}
	clo, chi, err := dcPortRange(parts[len(parts)-1])
	if err != nil {
		return nil, fmt.Errorf("%q: %w", s, err)
	}
	var out []dcPort
	if host == "" {
		for c := clo; c <= chi; c++ {
			out = append(out, dcPort{HostIP: ip, Container: c, Protocol: proto})
		}
		return out, nil
	}
	hlo, hhi, err := dcPortRange(host)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", s, err)
	}
	if hhi-hlo != chi-clo {
		return nil, fmt.Errorf("%q: ranges of different sizes", s)
	}
	for i := 0; i <= chi-clo; i++ {
		out = append(out, dcPort{HostIP: ip, Host: hlo + i, Container: clo + i, Protocol: proto})
	}
	return out, nil
}

func dcPortRange(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(s, "-")
	if lo, err = strconv.Atoi(a); err != nil {
		return 0, 0, err
	}
	hi = lo
	if isRange {
		if hi, err = strconv.Atoi(b); err != nil {
			return 0, 0, err
		}
	}
	if lo < 1 || hi > 65535 || hi < lo || hi-lo > 1000 {
		return 0, 0, fmt.Errorf("bad port range %q", s)
	}
	return lo, hi, nil
}

// dcParseVolume reads a volumes entry: "source:target[:mode]", "target"
// (anonymous) or the long syntax. Bind sources are made relative to the
// project directory.
func dcParseVolume(v any) (dcMount, error) {
	var mt dcMount
	if m, ok := v.(map[string]any); ok {
		mt = dcMount{Kind: dcStr(m["type"]), Source: dcStr(m["source"]), Target: dcStr(m["target"]), ReadOnly: m["read_only"] == true}
	} else {
		parts := strings.Split(dcStr(v), ":")
		switch len(parts) {
		case 1:
			mt.Target = parts[0]
		case 2, 3:
			mt.Source, mt.Target = parts[0], parts[1]
			if len(parts) == 3 {
				mt.ReadOnly = slices.Contains(strings.Split(parts[2], ","), "ro")
			}
		default:
			return mt, fmt.Errorf("%q: cannot read", v)
		}
		switch {
		case mt.Source == "":
			mt.Kind = "volume" // anonymous
		case strings.HasPrefix(mt.Source, ".") || strings.HasPrefix(mt.Source, "/") || strings.HasPrefix(mt.Source, "~"):
			mt.Kind = "bind"
		default:
			mt.Kind = "volume"
		}
	}
	if mt.Target == "" || !path.IsAbs(mt.Target) {
		return mt, fmt.Errorf("%v: the target must be an absolute path", v)
	}
	if mt.Kind == "bind" && !path.IsAbs(mt.Source) && !strings.HasPrefix(mt.Source, "~") {
		mt.Source = path.Clean(mt.Source)
	}
	return mt, nil
}

// ---- Files of the repository -------------------------------------------

// dcExample returns the committed template that stands for an operator's
// file: config.yaml -> config.example.yaml, .env -> .env.example.
func dcExample(fsys fs.FS, name string) (string, bool) {
	ext := path.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	for _, cand := range []string{name + ".example", stem + ".example" + ext} {
		if cand == ".example" || strings.HasPrefix(path.Base(cand), ".example") {
			continue
		}
		if _, err := fs.Stat(fsys, cand); err == nil {
			return cand, true
		}
	}
	return "", false
}

// dcRepoFile reads a project file, preferring its committed template (the
// test must not depend on an operator's local config.yaml or .env). It
// returns the name it read.
func dcRepoFile(fsys fs.FS, name string) (string, []byte, error) {
	name = path.Clean(name)
	if !fs.ValidPath(name) {
		return name, nil, fmt.Errorf("%q is outside the project directory", name)
	}
	if ex, ok := dcExample(fsys, name); ok {
		name = ex
	}
	b, err := fs.ReadFile(fsys, name)
	return name, b, err
}

var dcEnvName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// dcReadEnvFile reads the variables an env file sets (commented-out lines
// set nothing).
func dcReadEnvFile(fsys fs.FS, name string) (map[string]string, string, error) {
	used, b, err := dcRepoFile(fsys, name)
	if err != nil {
		return nil, used, err
	}
	vars := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, _ := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		if !dcEnvName.MatchString(k) {
			return nil, used, fmt.Errorf("%s: cannot read line %q", used, line)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		vars[k] = v
	}
	return vars, used, nil
}

// dcIgnored reports whether .dockerignore (patterns relative to the
// context root, matched against the path and its parents) excludes name.
func dcIgnored(fsys fs.FS, context, name string) bool {
	b, err := fs.ReadFile(fsys, path.Join(context, ".dockerignore"))
	if err != nil {
		return false
	}
	ignored := false
	for _, line := range strings.Split(string(b), "\n") {
		pat := strings.TrimSpace(line)
		if pat == "" || strings.HasPrefix(pat, "#") {
			continue
		}
		neg := strings.HasPrefix(pat, "!")
		pat = path.Clean(strings.TrimPrefix(strings.TrimPrefix(pat, "!"), "/"))
		for p := path.Clean(name); p != "." && p != "/"; p = path.Dir(p) {
			if ok, _ := path.Match(pat, p); ok {
				ignored = !neg
				break
			}
		}
	}
	return ignored
}

// ---- The Dockerfile ----------------------------------------------------

type dcStage struct {
	Base, Name string
	Workdir    string
	Env        map[string]string
	Runs       []string
	Copies     []dcCopy
	Entrypoint []string
	Cmd        []string
	cmdHere    bool // CMD set in this stage (not inherited)
	parent     int  // index of the stage this one is FROM, or -1
}

type dcCopy struct {
	From string
	Srcs []string
	Dst  string
}

func dcParseDockerfile(b []byte) ([]*dcStage, error) {
	var stages []*dcStage
	args := map[string]string{}
	expandArgs := func(s string) string {
		return dcVarRef.ReplaceAllStringFunc(s, func(ref string) string {
			g := dcVarRef.FindStringSubmatch(ref)
			if v, ok := args[g[1]+g[4]]; ok && v != "" {
				return v
			}
			return g[3]
		})
	}
	var lines []string
	var cur strings.Builder
	for _, l := range strings.Split(string(b), "\n") {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "#") {
			continue
		}
		if strings.HasSuffix(t, "\\") {
			cur.WriteString(strings.TrimSuffix(t, "\\") + " ")
			continue
		}
		cur.WriteString(t)
		if s := strings.TrimSpace(cur.String()); s != "" {
			lines = append(lines, s)
		}
		cur.Reset()
	}
	for _, l := range lines {
		instr, rest, _ := strings.Cut(l, " ")
		rest = strings.TrimSpace(rest)
		instr = strings.ToUpper(instr)
		if instr == "ARG" && len(stages) == 0 {
			k, v, _ := strings.Cut(rest, "=")
			args[k] = strings.Trim(v, `"`)
			continue
		}
		if instr == "FROM" {
			f := strings.Fields(expandArgs(rest))
			f = slices.DeleteFunc(f, func(s string) bool { return strings.HasPrefix(s, "--") })
			if len(f) == 0 {
				return nil, errors.New("FROM without an image")
			}
			st := &dcStage{Base: f[0], Workdir: "/", Env: map[string]string{}, parent: -1}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.Name = f[2]
			}
			for i, p := range stages {
				if p.Name != "" && p.Name == st.Base {
					st.parent, st.Workdir = i, p.Workdir
					for k, v := range p.Env {
						st.Env[k] = v
					}
					st.Entrypoint, st.Cmd = p.Entrypoint, p.Cmd
				}
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			return nil, fmt.Errorf("%s before FROM", instr)
		}
		st := stages[len(stages)-1]
		switch instr {
		case "WORKDIR":
			st.Workdir = path.Join(st.Workdir, rest)
			if path.IsAbs(rest) {
				st.Workdir = path.Clean(rest)
			}
		case "ENV":
			if k, _, ok := strings.Cut(rest, "="); ok && !strings.Contains(k, " ") {
				for _, kv := range dcShellFields(rest) { // ENV K=V K2=V2
					k, v, _ := strings.Cut(kv, "=")
					st.Env[k] = v
				}
			} else { // ENV K V
				k, v, _ := strings.Cut(rest, " ")
				st.Env[k] = strings.TrimSpace(v)
			}
		case "RUN":
			st.Runs = append(st.Runs, rest)
		case "COPY", "ADD":
			var words []string
			if strings.HasPrefix(rest, "[") {
				var list []string
				if err := yaml.Unmarshal([]byte(rest), &list); err != nil {
					return nil, fmt.Errorf("%s: %w", instr, err)
				}
				words = list
			} else {
				words = dcShellFields(rest)
			}
			cp := dcCopy{}
			for len(words) > 0 && strings.HasPrefix(words[0], "--") {
				if v, ok := strings.CutPrefix(words[0], "--from="); ok {
					cp.From = v
				}
				words = words[1:]
			}
			if len(words) < 2 {
				return nil, fmt.Errorf("%s %s: no destination", instr, rest)
			}
			cp.Srcs, cp.Dst = words[:len(words)-1], words[len(words)-1]
			st.Copies = append(st.Copies, cp)
		case "ENTRYPOINT", "CMD":
			var argv []string
			if strings.HasPrefix(rest, "[") {
				if err := yaml.Unmarshal([]byte(rest), &argv); err != nil {
					return nil, fmt.Errorf("%s: %w", instr, err)
				}
			} else {
				argv = []string{"/bin/sh", "-c", rest}
			}
			if instr == "ENTRYPOINT" {
				st.Entrypoint = argv
				if !st.cmdHere {
					st.Cmd = nil // ENTRYPOINT resets an inherited CMD
				}
			} else {
				st.Cmd, st.cmdHere = argv, true
			}
		}
	}
	if len(stages) == 0 {
		return nil, errors.New("no FROM")
	}
	return stages, nil
}

// dcShellFields splits a command line into words as a shell would, with
// quotes and backslashes (no expansion).
func dcShellFields(s string) []string {
	var out []string
	var w strings.Builder
	inWord := false
	var quote rune
	for i := 0; i < len(s); i++ {
		c := rune(s[i])
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else if c == '\\' && quote == '"' && i+1 < len(s) {
				i++
				w.WriteByte(s[i])
			} else {
				w.WriteRune(c)
			}
		case c == '\'' || c == '"':
			quote, inWord = c, true
		case c == '\\' && i+1 < len(s):
			i++
			w.WriteByte(s[i])
			inWord = true
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				out = append(out, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(c)
			inWord = true
		}
	}
	if inWord {
		out = append(out, w.String())
	}
	return out
}

// dcGoBuild is a `go build` found in a RUN instruction.
type dcGoBuild struct {
	Stage int
	Out   string // absolute path of the binary
	Pkgs  []string
	CGO   string // CGO_ENABLED in effect, "" if unset
	Tags  string // -tags, "" if none
}

var dcGoValueFlags = map[string]bool{
	"-o": true, "-ldflags": true, "-gcflags": true, "-asmflags": true, "-tags": true, "-mod": true,
	"-p": true, "-pkgdir": true, "-modfile": true, "-overlay": true, "-pgo": true, "-buildmode": true,
	"-compiler": true, "-gccgoflags": true, "-installsuffix": true, "-toolexec": true, "-C": true,
	"-coverpkg": true, "-covermode": true,
}

func dcGoBuilds(stages []*dcStage) []dcGoBuild {
	var out []dcGoBuild
	sep := regexp.MustCompile(`&&|\|\||;`)
	for i, st := range stages {
		for _, run := range st.Runs {
			for _, cmd := range sep.Split(run, -1) {
				words := dcShellFields(cmd)
				env := map[string]string{}
				for k, v := range st.Env {
					env[k] = v
				}
				for len(words) > 0 && strings.Contains(words[0], "=") && !strings.HasPrefix(words[0], "-") {
					k, v, _ := strings.Cut(words[0], "=")
					env[k] = v
					words = words[1:]
				}
				if len(words) < 2 || words[0] != "go" || words[1] != "build" {
					continue
				}
				b := dcGoBuild{Stage: i, CGO: env["CGO_ENABLED"]}
				rest := words[2:]
				for len(rest) > 0 {
					w := rest[0]
					rest = rest[1:]
					if !strings.HasPrefix(w, "-") {
						b.Pkgs = append(b.Pkgs, w)
						continue
					}
					name, val, hasVal := strings.Cut(strings.Replace(w, "--", "-", 1), "=")
					if !hasVal && dcGoValueFlags[name] && len(rest) > 0 {
						val, rest = rest[0], rest[1:]
					}
					switch name {
					case "-o":
						b.Out = val
					case "-tags":
						b.Tags = val
					}
				}
				if len(b.Pkgs) == 0 {
					b.Pkgs = []string{"."}
				}
				if b.Out == "" {
					b.Out = path.Base(path.Join(st.Workdir, b.Pkgs[0]))
				}
				if !path.IsAbs(b.Out) {
					b.Out = path.Join(st.Workdir, b.Out)
				}
				out = append(out, b)
			}
		}
	}
	return out
}

// dcImage is what the checks need of the image a service builds.
type dcImage struct {
	Dockerfile string
	Stages     []*dcStage
	Final      *dcStage
	Worker     *dcGoBuild // the go build of ./worker, if any
	Binary     string     // where the worker binary is in the final stage
}

// dcBuildImage reads the Dockerfile a service builds and checks it: the
// files it copies from the context are there, its Go is new enough for
// go.mod, and, when it builds ./worker, its final stage holds the binary.
func dcBuildImage(fsys fs.FS, name string, s *dcService) (*dcImage, []string) {
	var p []string
	ctx := path.Clean(s.Build.Context)
	if !fs.ValidPath(ctx) {
		return nil, []string{fmt.Sprintf("build: %q: context %q is outside the project directory", name, s.Build.Context)}
	}
	df := path.Join(ctx, s.Build.Dockerfile)
	b, err := fs.ReadFile(fsys, df)
	if err != nil {
		return nil, []string{fmt.Sprintf("build: %q: Dockerfile %q: %v", name, df, err)}
	}
	stages, err := dcParseDockerfile(b)
	if err != nil {
		return nil, []string{fmt.Sprintf("build: %q: %s: %v", name, df, err)}
	}
	img := &dcImage{Dockerfile: df, Stages: stages, Final: stages[len(stages)-1]}

	// Context files COPY names must be in the context and not ignored.
	root := "" // where the stage copies the whole context, if it does
	for _, st := range stages {
		for _, cp := range st.Copies {
			if cp.From != "" {
				continue
			}
			for _, src := range cp.Srcs {
				src = path.Clean(src)
				if src == "." {
					root = path.Join(st.Workdir, cp.Dst)
					continue
				}
				if strings.ContainsAny(src, "*?[") || strings.Contains(src, "://") {
					continue
				}
				if _, err := fs.Stat(fsys, path.Join(ctx, src)); err != nil || dcIgnored(fsys, ctx, src) {
					p = append(p, fmt.Sprintf("build: %s copies %q, which is not in the build context (missing or in .dockerignore)", df, src))
				}
			}
		}
	}

	// The Go toolchain of a golang image must satisfy go.mod's go line
	// (the official images set GOTOOLCHAIN=local).
	if gomod, err := fs.ReadFile(fsys, path.Join(ctx, "go.mod")); err == nil {
		if m := regexp.MustCompile(`(?m)^go\s+(\d+)\.(\d+)(?:\.(\d+))?`).FindSubmatch(gomod); m != nil {
			need := [3]int{dcAtoi(m[1]), dcAtoi(m[2]), dcAtoi(m[3])}
			for _, st := range stages {
				repo, tag := dcImageName(st.Base)
				if repo != "golang" {
					continue
				}
				t := regexp.MustCompile(`^(\d+)\.(\d+)(?:\.(\d+))?`).FindStringSubmatch(tag)
				if t == nil {
					continue // latest, a digest: cannot tell
				}
				have := [3]int{dcAtoi([]byte(t[1])), dcAtoi([]byte(t[2])), dcAtoi([]byte(t[3]))}
				if t[3] == "" { // a floating minor tag has the newest patch
					have[2] = need[2]
				}
				if slices.Compare(have[:], need[:]) < 0 {
					p = append(p, fmt.Sprintf("build: %s: %s is older than go.mod's go %s.%s", df, st.Base, m[1], m[2]))
				}
			}
		}
	}

	// The worker: the go build of ./worker, and the binary in the final stage.
	for _, gb := range dcGoBuilds(stages) {
		for _, pkg := range gb.Pkgs {
			dir := path.Join(stages[gb.Stage].Workdir, pkg)
			rel := strings.TrimPrefix(strings.TrimPrefix(dir, root), "/")
			if root == "" || !strings.HasPrefix(dir, root) {
				rel = path.Clean(pkg)
			}
			if rel == "worker" || strings.HasSuffix(pkg, "/optoutsync/worker") {
				gb := gb
				img.Worker = &gb
			}
		}
	}
	if img.Worker == nil {
		return img, p
	}
	if _, err := fs.Stat(fsys, path.Join(ctx, "worker", "main.go")); err != nil || dcIgnored(fsys, ctx, "worker") {
		p = append(p, fmt.Sprintf("build: %s builds ./worker, which is not in the build context", df))
	}
	img.Binary = dcBinaryIn(stages, len(stages)-1, img.Worker)
	if img.Binary == "" {
		p = append(p, fmt.Sprintf("build: %s: the final stage does not run the worker: %s (built in stage %d) is not copied into it", df, img.Worker.Out, img.Worker.Stage))
	}
	base, _ := dcImageName(img.Final.Base)
	if (base == "scratch" || strings.Contains(base, "distroless/static")) && img.Worker.CGO != "0" {
		p = append(p, fmt.Sprintf("build: %s: the final image %s has no C library, but the worker is built without CGO_ENABLED=0", df, img.Final.Base))
	}
	if !slices.Contains(strings.FieldsFunc(img.Worker.Tags, func(r rune) bool { return r == ',' || r == ' ' }), "nodev") {
		p = append(p, fmt.Sprintf("build: %s: the worker is not the production build (go build -tags nodev): it links the dev mode's Temporal server and emulators", df))
	}
	return img, p
}

// dcBinaryIn returns where stage i holds the binary gb builds, or "".
func dcBinaryIn(stages []*dcStage, i int, gb *dcGoBuild) string {
	st := stages[i]
	found := ""
	if i == gb.Stage {
		found = gb.Out
	} else if st.parent >= 0 {
		found = dcBinaryIn(stages, st.parent, gb)
	}
	for _, cp := range st.Copies {
		if cp.From == "" {
			continue
		}
		from := -1
		for j, s := range stages[:i] {
			if s.Name == cp.From || strconv.Itoa(j) == cp.From {
				from = j
			}
		}
		if from < 0 {
			continue
		}
		have := dcBinaryIn(stages, from, gb)
		if have == "" {
			continue
		}
		for _, src := range cp.Srcs {
			src = path.Clean(src)
			rel := ""
			switch {
			case src == have:
				rel = path.Base(have)
			case strings.HasPrefix(have, strings.TrimSuffix(src, "/")+"/"):
				rel = strings.TrimPrefix(have, strings.TrimSuffix(src, "/")+"/")
			default:
				continue
			}
			dst := cp.Dst
			if !path.IsAbs(dst) {
				dst = path.Join(st.Workdir, dst)
			}
			if src == have && len(cp.Srcs) == 1 && !strings.HasSuffix(cp.Dst, "/") {
				found = path.Clean(dst) // copied to a file name
			} else {
				found = path.Join(dst, rel)
			}
		}
	}
	return found
}

func dcAtoi(b []byte) int { n, _ := strconv.Atoi(string(b)); return n }

// dcImageName splits an image reference into its repository (without the
// registry or "library/") and tag.
func dcImageName(ref string) (repo, tag string) {
	ref, _, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref, tag = ref[:i], ref[i+1:]
	}
	if first, rest, ok := strings.Cut(ref, "/"); ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		ref = rest // a registry
	}
	return strings.TrimPrefix(ref, "library/"), tag
}

// ---- The checks --------------------------------------------------------

// dcCheck returns every inconsistency of the compose project, one sentence each.
func dcCheck(fsys fs.FS, c *dcModel) []string {
	p := slices.Clone(c.Problems)
	names := slices.Sorted(maps.Keys(c.Services))
	p = append(p, dcCheckDependsOn(c, names)...)
	p = append(p, dcCheckPorts(c, names)...)
	p = append(p, dcCheckMounts(fsys, c, names)...)

	images := map[string]*dcImage{}
	var workers []string
	for _, n := range names {
		s := c.Services[n]
		if s.Image == "" && s.Build == nil {
			p = append(p, fmt.Sprintf("service %q has neither image nor build", n))
		}
		if s.Build == nil {
			continue
		}
		img, q := dcBuildImage(fsys, n, s)
		p = append(p, q...)
		if img != nil {
			images[n] = img
			if img.Worker != nil {
				workers = append(workers, n)
			}
		}
	}
	if len(workers) == 0 {
		p = append(p, "build: no service builds ./worker")
	}
	for _, n := range workers {
		p = append(p, dcCheckWorker(fsys, c, n, images[n])...)
	}
	p = append(p, dcCheckAddresses(fsys, c, names, images)...)
	p = append(p, dcCheckTemporalDatabase(fsys, c, names)...)
	p = append(p, dcCheckCluster(fsys, c, names, workers)...)
	return p
}

// dcWorkerName is the service that builds ./worker (for the tests' mutations).
func dcWorkerName(fsys fs.FS, c *dcModel) string {
	for n, s := range c.Services {
		if s.Build != nil {
			if img, _ := dcBuildImage(fsys, n, s); img != nil && img.Worker != nil {
				return n
			}
		}
	}
	return ""
}

// dcCheckDependsOn: every dependency is defined, the graph has no cycle,
// and a service waited on to be healthy has a healthcheck.
func dcCheckDependsOn(c *dcModel, names []string) []string {
	var p []string
	conditions := []string{"service_started", "service_healthy", "service_completed_successfully"}
	for _, n := range names {
		for _, dep := range slices.Sorted(maps.Keys(c.Services[n].DependsOn)) {
			cond := c.Services[n].DependsOn[dep]
			d, ok := c.Services[dep]
			switch {
			case !ok:
				p = append(p, fmt.Sprintf("depends_on: %q depends on %q, which is not defined", n, dep))
			case !slices.Contains(conditions, cond):
				p = append(p, fmt.Sprintf("depends_on: %q on %q: unknown condition %q", n, dep, cond))
			case cond == "service_healthy" && d.Healthcheck == nil:
				p = append(p, fmt.Sprintf("depends_on: %q waits for %q to be healthy, but %q has no healthcheck", n, dep, dep))
			}
		}
	}
	// Cycles, by depth-first search.
	const (
		unseen = iota
		active
		done
	)
	state := map[string]int{}
	var stack []string
	var visit func(n string)
	visit = func(n string) {
		state[n] = active
		stack = append(stack, n)
		deps := []string{}
		for d := range c.Services[n].DependsOn {
			deps = append(deps, d)
		}
		slices.Sort(deps)
		for _, d := range deps {
			if _, ok := c.Services[d]; !ok {
				continue
			}
			switch state[d] {
			case active:
				i := slices.Index(stack, d)
				p = append(p, fmt.Sprintf("depends_on: cycle %s -> %s", strings.Join(stack[i:], " -> "), d))
			case unseen:
				visit(d)
			}
		}
		stack = stack[:len(stack)-1]
		state[n] = done
	}
	for _, n := range names {
		if state[n] == unseen {
			visit(n)
		}
	}
	return p
}

// dcDependsOnTransitively reports whether from waits, directly or not, for to.
func dcDependsOnTransitively(c *dcModel, from, to string) bool {
	seen := map[string]bool{}
	var walk func(n string) bool
	walk = func(n string) bool {
		if seen[n] {
			return false
		}
		seen[n] = true
		s, ok := c.Services[n]
		if !ok {
			return false
		}
		for d := range s.DependsOn {
			if d == to || walk(d) {
				return true
			}
		}
		return false
	}
	return walk(from)
}

// dcCheckPorts: no two services publish the same host port, and a
// published container port is one the service listens on.
func dcCheckPorts(c *dcModel, names []string) []string {
	var p []string
	type key struct {
		port  int
		proto string
	}
	type owner struct{ service, ip string }
	published := map[key][]owner{}
	anyIP := func(ip string) bool { return ip == "" || ip == "0.0.0.0" || ip == "::" }
	for _, n := range names {
		s := c.Services[n]
		listen, known := dcListenPorts(c, n)
		for _, pt := range s.Ports {
			if known && !slices.Contains(listen, pt.Container) {
				p = append(p, fmt.Sprintf("ports: %q publishes container port %d, but it listens on %v", n, pt.Container, listen))
			}
			if pt.Host == 0 {
				continue
			}
			k := key{pt.Host, pt.Protocol}
			for _, o := range published[k] {
				if o.ip == pt.HostIP || anyIP(o.ip) || anyIP(pt.HostIP) {
					p = append(p, fmt.Sprintf("ports: host port %d/%s is published by both %q and %q", pt.Host, pt.Protocol, o.service, n))
				}
			}
			published[k] = append(published[k], owner{n, pt.HostIP})
		}
	}
	return p
}

// dcListenPorts returns the container ports a service listens on: its
// image's own (for the images this project uses; environment overrides
// honoured) and the ones it exposes. known is false when they cannot be
// told.
func dcListenPorts(c *dcModel, name string) (ports []int, known bool) {
	s := c.Services[name]
	envPort := func(key string, def int) int {
		if v, err := strconv.Atoi(s.Environment[key]); err == nil {
			return v
		}
		return def
	}
	repo, _ := dcImageName(s.Image)
	switch repo {
	case "postgres":
		port := envPort("PGPORT", 5432)
		for i, w := range s.Command {
			if w == "-p" && i+1 < len(s.Command) {
				port, _ = strconv.Atoi(s.Command[i+1])
			}
		}
		ports, known = []int{port}, true
	case "temporalio/auto-setup", "temporalio/server":
		ports, known = []int{envPort("FRONTEND_GRPC_PORT", 7233), envPort("FRONTEND_HTTP_PORT", 7243)}, true
	case "temporalio/ui":
		ports, known = []int{envPort("TEMPORAL_UI_PORT", 8080)}, true
	default:
		for _, pt := range s.Ports {
			ports = append(ports, pt.Container)
		}
	}
	ports = append(ports, s.Expose...)
	return ports, known || len(ports) > 0
}

// dcCheckMounts: bind-mounted host paths and env files are in the
// project (or have a committed template), named volumes and configs are
// declared, file configs exist.
func dcCheckMounts(fsys fs.FS, c *dcModel, names []string) []string {
	var p []string
	for _, n := range names {
		s := c.Services[n]
		for _, ef := range s.EnvFiles {
			if _, _, err := dcReadEnvFile(fsys, ef.Path); err != nil && ef.Required {
				p = append(p, fmt.Sprintf("env_file: %q: %v", n, err))
			}
		}
		// environment wins over env_file: a variable the env file sets
		// and environment also sets would be ignored, silently.
		for _, ef := range s.EnvFiles {
			vars, used, _ := dcReadEnvFile(fsys, ef.Path)
			for _, k := range slices.Sorted(maps.Keys(vars)) {
				if v, ok := s.Environment[k]; ok && v != vars[k] {
					p = append(p, fmt.Sprintf("env_file: %q: %s sets %s, but its environment sets it too and wins", n, used, k))
				}
			}
		}
		for _, m := range s.Mounts {
			switch m.Kind {
			case "bind":
				if path.IsAbs(m.Source) || strings.HasPrefix(m.Source, "~") {
					continue // a path of the host, not of the project
				}
				if !fs.ValidPath(m.Source) {
					p = append(p, fmt.Sprintf("volumes: %q mounts %q, outside the project directory", n, m.Source))
					continue
				}
				_, statErr := fs.Stat(fsys, m.Source)
				_, hasExample := dcExample(fsys, m.Source)
				// A path .dockerignore keeps out of images is the operator's
				// own (secrets); Docker creates it, empty, when it is missing.
				if statErr != nil && !hasExample && !dcIgnored(fsys, ".", m.Source) {
					p = append(p, fmt.Sprintf("volumes: %q mounts %q, which is not in the project", n, m.Source))
				}
			case "volume":
				if m.Source != "" && !c.Volumes[m.Source] {
					p = append(p, fmt.Sprintf("volumes: %q uses named volume %q, not declared under the top-level volumes", n, m.Source))
				}
			case "config":
				cfg, ok := c.Configs[m.Source]
				if !ok {
					p = append(p, fmt.Sprintf("configs: %q uses config %q, not declared under the top-level configs", n, m.Source))
					continue
				}
				if cfg.File != "" {
					if _, _, err := dcRepoFile(fsys, cfg.File); err != nil {
						p = append(p, fmt.Sprintf("configs: config %q: %v", m.Source, err))
					}
				}
			}
		}
		for _, net := range s.Networks {
			if !c.Networks[net] {
				p = append(p, fmt.Sprintf("networks: %q joins network %q, not declared", n, net))
			}
		}
	}
	return p
}

// dcMountedFile returns the content a container path of a service comes
// from: a bind-mounted file (or a file in a bind-mounted directory) or a
// config. ok is false when no mount covers the path.
func dcMountedFile(fsys fs.FS, c *dcModel, s *dcService, target string) (content []byte, from string, ok bool, err error) {
	for _, m := range s.Mounts {
		rel, under := dcUnder(target, m.Target)
		if !under {
			continue
		}
		switch m.Kind {
		case "bind":
			if path.IsAbs(m.Source) {
				return nil, m.Source, true, fmt.Errorf("%s is outside the project", m.Source)
			}
			from, content, err = dcRepoFile(fsys, path.Join(m.Source, rel))
			return content, from, true, err
		case "config":
			cfg := c.Configs[m.Source]
			if rel != "." {
				continue
			}
			if cfg.File != "" {
				from, content, err = dcRepoFile(fsys, cfg.File)
				return content, from, true, err
			}
			return []byte(cfg.Content), "config " + m.Source, true, nil
		default:
			return nil, m.Kind + " " + m.Source, true, nil
		}
	}
	return nil, "", false, nil
}

// dcUnder reports whether p is dir or inside it, and p relative to dir.
func dcUnder(p, dir string) (string, bool) {
	p, dir = path.Clean(p), path.Clean(dir)
	if p == dir {
		return ".", true
	}
	if rel, ok := strings.CutPrefix(p, strings.TrimSuffix(dir, "/")+"/"); ok {
		return rel, true
	}
	return "", false
}

// dcEffectiveEnv is a service's environment as the container sees it:
// the image's ENV, then the env files, then environment (which wins).
func dcEffectiveEnv(fsys fs.FS, s *dcService, img *dcImage) map[string]string {
	env := map[string]string{}
	if img != nil {
		for k, v := range img.Final.Env {
			env[k] = v
		}
	}
	for _, ef := range s.EnvFiles {
		vars, _, _ := dcReadEnvFile(fsys, ef.Path)
		for k, v := range vars {
			env[k] = v
		}
	}
	for k, v := range s.Environment {
		env[k] = v
	}
	return env
}

var dcWorkerFlag = regexp.MustCompile(`fs\.[A-Za-z]+\((?:&[^,]+,\s*)?"([A-Za-z0-9-]+)"`)

// dcCheckWorker checks the worker service: its image runs the worker
// binary with flags the worker knows; the configuration file it reads is
// mounted, parses with the worker's own ParseConfig, and every variable
// and file it names is provided; the ledger it names exists.
func dcCheckWorker(fsys fs.FS, c *dcModel, name string, img *dcImage) []string {
	var p []string
	s := c.Services[name]
	bad := func(format string, args ...any) {
		p = append(p, fmt.Sprintf("worker %q: ", name)+fmt.Sprintf(format, args...))
	}
	env := dcEffectiveEnv(fsys, s, img)

	// The process: compose's entrypoint/command override the image's.
	entry, cmd := img.Final.Entrypoint, img.Final.Cmd
	if s.Entrypoint != nil {
		entry, cmd = s.Entrypoint, nil
	}
	if s.Command != nil {
		cmd = s.Command
	}
	argv := append(slices.Clone(entry), cmd...)
	if img.Binary != "" {
		runs := len(argv) > 0 && argv[0] == img.Binary
		if len(argv) > 0 && !path.IsAbs(argv[0]) {
			pathDirs := strings.Split(dcOr(env["PATH"], "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"), ":")
			runs = slices.Contains(pathDirs, path.Dir(img.Binary)) && argv[0] == path.Base(img.Binary)
		}
		if !runs {
			bad("the container does not run the worker: it runs %q, the worker binary is %s", argv, img.Binary)
		}
	}

	// Flags the worker knows (worker/main.go defines them).
	var args []string
	if len(argv) > 0 {
		args = argv[1:]
	}
	if src, err := fs.ReadFile(fsys, "worker/main.go"); err == nil {
		known := map[string]bool{}
		for _, m := range dcWorkerFlag.FindAllSubmatch(src, -1) {
			known[string(m[1])] = true
		}
		for _, a := range args {
			if a == "--" || !strings.HasPrefix(a, "-") {
				break
			}
			f, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if !known[f] {
				bad("flag %q is not a flag of the worker (%s)", a, strings.Join(slices.Sorted(maps.Keys(known)), ", "))
			}
		}
	}

	// The configuration file: -config, or $OPTOUT_CONFIG.
	cfgPath := env["OPTOUT_CONFIG"]
	for i, a := range args {
		switch {
		case (a == "-config" || a == "--config") && i+1 < len(args):
			cfgPath = args[i+1]
		case strings.HasPrefix(a, "-config=") || strings.HasPrefix(a, "--config="):
			_, cfgPath, _ = strings.Cut(a, "=")
		}
	}
	if cfgPath == "" {
		bad("no configuration file: neither -config nor OPTOUT_CONFIG is given")
		return p
	}
	if !path.IsAbs(cfgPath) {
		cfgPath = path.Join(img.Final.Workdir, cfgPath)
	}
	b, from, ok, err := dcMountedFile(fsys, c, s, cfgPath)
	switch {
	case !ok:
		bad("the configuration file %s is not mounted", cfgPath)
		return p
	case err != nil:
		bad("the configuration file %s: %v", cfgPath, err)
		return p
	case b == nil:
		bad("the configuration file %s is on %s, not from the project", cfgPath, from)
		return p
	}
	cfg, err := ParseConfig(b, false)
	if err != nil {
		bad("the worker refuses its configuration (%s): %v", from, err)
		return p
	}

	// Every ...Env the file names is set, every ...File is mounted.
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		bad("%s: %v", from, err)
		return p
	}
	need := map[string]string{"TEMPORAL_ADDRESS": "the Temporal frontend (unset: localhost, the container itself)"}
	if cfg.Ledger.KeyEnv == "" && cfg.Ledger.KeyFile == "" {
		need[ledger.DefaultKeyEnv] = "ledger key (the default variable)"
	}
	if _, file := env[codec.KeysFileEnv]; cfg.Codec.Encryption != encryptionOff && !file {
		need[codec.KeysEnv] = "payload encryption keys (codec.encryption is on)"
	}
	var files []string
	dcWalk(&doc, "", func(key, keyPath, value string) {
		switch {
		case strings.HasSuffix(key, "Env") && dcEnvName.MatchString(value):
			need[value] = keyPath
		case strings.HasSuffix(key, "File") && value != "":
			files = append(files, keyPath+"="+value)
		}
	})
	for _, v := range slices.Sorted(maps.Keys(need)) {
		if _, ok := env[v]; !ok {
			bad("%s needs %q (%s), which neither its environment nor its env_file sets", from, v, need[v])
		}
	}
	for _, f := range files {
		keyPath, file, _ := strings.Cut(f, "=")
		if !path.IsAbs(file) {
			file = path.Join(img.Final.Workdir, file)
		}
		if _, _, ok, _ := dcMountedFile(fsys, c, s, file); !ok {
			bad("%s: %s names %q, which no volume of the service provides", from, keyPath, file)
		}
	}

	// The consent ledger.
	switch cfg.Ledger.Driver {
	case ledger.Postgres:
		if cfg.Ledger.URLEnv != "" {
			p = append(p, dcCheckLedgerURL(fsys, c, name, cfg.Ledger.URLEnv, env[cfg.Ledger.URLEnv])...)
		}
	default: // SQLite: the file must outlive the container.
		db := dcOr(cfg.Ledger.Path, "ledger.db")
		if !path.IsAbs(db) {
			db = path.Join(img.Final.Workdir, db)
		}
		writable := false
		for _, m := range s.Mounts {
			if _, under := dcUnder(path.Dir(db), m.Target); under && !m.ReadOnly && (m.Kind == "volume" || m.Kind == "bind") {
				writable = true
			}
		}
		if !writable {
			bad("the SQLite ledger %s is on no writable volume: the consent ledger would be lost with the container", db)
		}
	}

	// The namespace the worker uses is the one the cluster setup creates
	// (dcCheckCluster checks that a service of the file creates it).
	if ns := dcOr(env["TEMPORAL_NAMESPACE"], "default"); ns != clusterNamespace {
		bad("uses namespace %q, but the cluster setup creates %q", ns, clusterNamespace)
	}
	if host, _, ok := strings.Cut(env["TEMPORAL_ADDRESS"], ":"); !ok {
		bad("TEMPORAL_ADDRESS %q is not host:port", env["TEMPORAL_ADDRESS"])
	} else if _, ok := c.Services[host]; !ok {
		bad("TEMPORAL_ADDRESS %q names %q, which is not a service of %s", env["TEMPORAL_ADDRESS"], host, dcComposeFile)
	}
	return p
}

func dcOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// dcWalk calls f for every scalar value of a mapping in the YAML tree.
func dcWalk(n *yaml.Node, at string, f func(key, keyPath, value string)) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for i, c := range n.Content {
			sub := at
			if n.Kind == yaml.SequenceNode {
				sub = fmt.Sprintf("%s[%d]", at, i)
			}
			dcWalk(c, sub, f)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i].Value, n.Content[i+1]
			sub := strings.TrimPrefix(at+"."+k, ".")
			if v.Kind == yaml.ScalarNode {
				f(k, sub, v.Value)
			} else {
				dcWalk(v, sub, f)
			}
		}
	}
}

// dcPostgres is what a postgres service creates: its superuser, password,
// databases and roles.
type dcPostgres struct {
	User, Password string
	Databases      map[string]bool
	Roles          map[string]bool
}

var (
	dcCreateDatabase = regexp.MustCompile(`(?i)\bcreate\s+database\s+"?([A-Za-z0-9_]+)"?|\bcreatedb\s+(?:-[A-Za-z]+\s+\S+\s+)*"?([A-Za-z0-9_]+)`)
	dcCreateRole     = regexp.MustCompile(`(?i)\bcreate\s+(?:user|role)\s+"?([A-Za-z0-9_]+)"?`)
)

// dcPostgresOf reads what the official postgres image's entrypoint creates
// on a new data volume: POSTGRES_DB (default the user) and whatever the
// *.sql and *.sh files in /docker-entrypoint-initdb.d create.
func dcPostgresOf(fsys fs.FS, c *dcModel, s *dcService) dcPostgres {
	pg := dcPostgres{
		User:      dcOr(s.Environment["POSTGRES_USER"], "postgres"),
		Password:  s.Environment["POSTGRES_PASSWORD"],
		Databases: map[string]bool{},
		Roles:     map[string]bool{},
	}
	pg.Databases[dcOr(s.Environment["POSTGRES_DB"], pg.User)] = true
	pg.Roles[pg.User] = true
	const initdb = "/docker-entrypoint-initdb.d"
	var scripts []string
	for _, m := range s.Mounts {
		var texts []string
		rel, under := dcUnder(m.Target, initdb)
		switch {
		case !under:
			continue
		case rel == "." && m.Kind == "bind": // the whole directory
			entries, _ := fs.ReadDir(fsys, m.Source)
			for _, e := range entries {
				if b, err := fs.ReadFile(fsys, path.Join(m.Source, e.Name())); err == nil && dcInitScript(e.Name()) {
					texts = append(texts, string(b))
				}
			}
		case dcInitScript(m.Target):
			if b, _, _, err := dcMountedFile(fsys, c, s, m.Target); err == nil {
				texts = append(texts, string(b))
			}
		}
		scripts = append(scripts, texts...)
	}
	for _, text := range scripts {
		for _, m := range dcCreateDatabase.FindAllStringSubmatch(text, -1) {
			pg.Databases[m[1]+m[2]] = true
		}
		for _, m := range dcCreateRole.FindAllStringSubmatch(text, -1) {
			pg.Roles[m[1]] = true
		}
	}
	return pg
}

// dcInitScript: the postgres entrypoint runs *.sh and *.sql files only.
func dcInitScript(name string) bool {
	return strings.HasSuffix(name, ".sql") || strings.HasSuffix(name, ".sh")
}

// dcCheckLedgerURL: the ledger's PostgreSQL URL names a postgres service
// of the file, a user it has (with its password), and a database its
// initialization creates.
func dcCheckLedgerURL(fsys fs.FS, c *dcModel, name, urlEnv, raw string) []string {
	var p []string
	bad := func(format string, args ...any) {
		p = append(p, fmt.Sprintf("ledger (%s of %q): ", urlEnv, name)+fmt.Sprintf(format, args...))
	}
	if raw == "" {
		bad("no URL is set in %s or its env_file", dcComposeFile)
		return p
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		bad("not a postgres:// URL")
		return p
	}
	host := u.Hostname()
	s, ok := c.Services[host]
	if !ok {
		bad("host %q is not a service of %s", host, dcComposeFile)
		return p
	}
	if repo, _ := dcImageName(s.Image); repo != "postgres" {
		bad("host %q is not a postgres service (%s)", host, s.Image)
		return p
	}
	pg := dcPostgresOf(fsys, c, s)
	db := strings.TrimPrefix(u.Path, "/")
	user := u.User.Username()
	pass, _ := u.User.Password()
	if !pg.Databases[dcOr(db, user)] {
		bad("database %q is created neither by POSTGRES_DB nor by an init script of %q (it creates %v)", dcOr(db, user), host, slices.Sorted(maps.Keys(pg.Databases)))
	}
	switch {
	case !pg.Roles[user]:
		bad("user %q is not a role of %q", user, host)
	case user == pg.User && pass != pg.Password:
		bad("the password of user %q is not %q's POSTGRES_PASSWORD", user, host)
	}
	return p
}

var dcHostPort = regexp.MustCompile(`^([A-Za-z0-9][A-Za-z0-9_.-]*):(\d{1,5})$`)

// dcCheckAddresses: every address a service is given (environment, env
// files, command, healthcheck) that names a service of the file names a
// port it listens on, on a network both share; and the service waits for
// the one it connects to.
func dcCheckAddresses(fsys fs.FS, c *dcModel, names []string, images map[string]*dcImage) []string {
	var p []string
	for _, n := range names {
		s := c.Services[n]
		type addr struct {
			where, host string
			port        int
			connects    bool // used at start (not a healthcheck)
		}
		var addrs []addr
		scan := func(where, v string, connects bool) {
			if strings.Contains(v, "://") {
				u, err := url.Parse(v)
				if err != nil {
					return
				}
				port, _ := strconv.Atoi(u.Port())
				if port == 0 {
					port = map[string]int{"postgres": 5432, "postgresql": 5432, "http": 80, "https": 443}[u.Scheme]
				}
				if port != 0 {
					addrs = append(addrs, addr{where, u.Hostname(), port, connects})
				}
				return
			}
			if m := dcHostPort.FindStringSubmatch(v); m != nil {
				port, _ := strconv.Atoi(m[2])
				addrs = append(addrs, addr{where, m[1], port, connects})
			}
		}
		env := dcEffectiveEnv(fsys, s, images[n])
		for _, k := range slices.Sorted(maps.Keys(env)) {
			scan(k, env[k], true)
		}
		for _, w := range s.Command {
			scan("command", w, true)
		}
		for _, w := range s.Healthcheck {
			scan("healthcheck", w, false)
		}
		for _, a := range addrs {
			t, ok := c.Services[a.host]
			if !ok {
				continue // not an address of this file
			}
			if listen, known := dcListenPorts(c, a.host); !known {
				p = append(p, fmt.Sprintf("address: %q %s names %s:%d, but which ports %q listens on cannot be told (declare expose)", n, a.where, a.host, a.port, a.host))
			} else if !slices.Contains(listen, a.port) {
				p = append(p, fmt.Sprintf("address: %q %s names %s on port %d, but it listens on %v", n, a.where, a.host, a.port, listen))
			}
			if s.NetworkMode == "" && t.NetworkMode == "" && !slices.ContainsFunc(s.Networks, func(net string) bool { return slices.Contains(t.Networks, net) }) {
				p = append(p, fmt.Sprintf("address: %q %s names %q, which is on none of its networks", n, a.where, a.host))
			}
			if a.connects && a.host != n && !dcDependsOnTransitively(c, n, a.host) {
				p = append(p, fmt.Sprintf("depends_on: %q connects to %q (%s) but does not depend on it", n, a.host, a.where))
			}
		}
	}
	return p
}

// dcCheckTemporalDatabase: the database settings of Temporal's services
// (the server's DB, POSTGRES_* / MYSQL_* and DB_PORT; the schema tool's
// SQL_*) name a service of the file, on a port it listens on, with the
// credentials it has.
func dcCheckTemporalDatabase(fsys fs.FS, c *dcModel, names []string) []string {
	var p []string
	for _, n := range names {
		s := c.Services[n]
		e := s.Environment
		var seeds, user, pass, port string
		switch repo, _ := dcImageName(s.Image); repo {
		case "temporalio/auto-setup", clusterServerImage:
			// DB_PORT's default: auto-setup's is 3306 whatever the database;
			// the server's template's is the database's own.
			port = dcOr(e["DB_PORT"], "5432")
			if e["DB_PORT"] == "" && (repo == "temporalio/auto-setup" || e["DB"] == "mysql8") {
				port = "3306"
			}
			switch e["DB"] {
			case "postgres12", "postgres12_pgx", "postgresql":
				seeds, user, pass = e["POSTGRES_SEEDS"], e["POSTGRES_USER"], e["POSTGRES_PWD"]
			case "mysql8":
				seeds, user, pass = e["MYSQL_SEEDS"], e["MYSQL_USER"], e["MYSQL_PWD"]
			default:
				continue // cassandra, or a database this check does not know
			}
		case clusterToolsImage:
			if e["SQL_HOST"] == "" {
				continue // no temporal-sql-tool connection
			}
			seeds, user, pass, port = e["SQL_HOST"], e["SQL_USER"], e["SQL_PASSWORD"], dcOr(e["SQL_PORT"], "3306") // the tool's default
		default:
			continue
		}
		portN, _ := strconv.Atoi(port)
		for _, seed := range strings.Split(seeds, ",") {
			seed = strings.TrimSpace(seed)
			db, ok := c.Services[seed]
			if !ok {
				continue // a database outside the file
			}
			if listen, known := dcListenPorts(c, seed); known && !slices.Contains(listen, portN) {
				p = append(p, fmt.Sprintf("temporal database: %q connects to %s on port %d, but it listens on %v", n, seed, portN, listen))
			}
			if !dcDependsOnTransitively(c, n, seed) {
				p = append(p, fmt.Sprintf("depends_on: %q connects to %q (its database) but does not depend on it", n, seed))
			}
			if repo, _ := dcImageName(db.Image); repo == "postgres" {
				pg := dcPostgresOf(fsys, c, db)
				if !pg.Roles[user] || (user == pg.User && pass != pg.Password) {
					p = append(p, fmt.Sprintf("temporal database: %q logs in to %s as user %q, which it does not know with that password", n, seed, user))
				}
			}
		}
	}
	return p
}

var dcServerModule = regexp.MustCompile(`(?m)^\s*go\.temporal\.io/server\s+v(\S+)`)

// dcCheckCluster: the Temporal services do what TestCluster proves, as
// cluster_setup_test.go states it. The server and its tools are go.mod's
// go.temporal.io/server version; the server's environment selects the
// PostgreSQL plugin with SQL visibility, and its dynamic configuration is
// mounted; the schema commands for the databases it names run, in order,
// in a service it waits for to complete; the namespace and search
// attribute commands run, in order, in a service that waits for it and
// that the worker waits for to complete. Commands are compared word for
// word with the test's, so they are written out in full (no loops or
// variables), connection settings in the environment.
func dcCheckCluster(fsys fs.FS, c *dcModel, names []string, workers []string) []string {
	var p []string
	bad := func(format string, args ...any) { p = append(p, "cluster: "+fmt.Sprintf(format, args...)) }

	version := ""
	if b, err := fs.ReadFile(fsys, "go.mod"); err == nil {
		if m := dcServerModule.FindSubmatch(b); m != nil {
			version = string(m[1])
		}
	}
	if version == "" {
		bad("go.mod does not require go.temporal.io/server")
	}
	var servers []string
	for _, n := range names {
		repo, tag := dcImageName(c.Services[n].Image)
		if repo != clusterServerImage && repo != clusterToolsImage {
			continue
		}
		if tag != version {
			bad("%q runs %s, but go.mod's go.temporal.io/server is %s: the cluster test proves that version", n, c.Services[n].Image, version)
		}
		if repo == clusterServerImage {
			servers = append(servers, n)
		}
	}
	if len(servers) != 1 {
		bad("want one %s service, the server the cluster test runs; there are %d", clusterServerImage, len(servers))
		return p
	}
	server := servers[0]
	s := c.Services[server]
	e := s.Environment
	if db := dcOr(e["DB"], "cassandra"); db != clusterPlugin {
		bad("%q: DB %q: the cluster test proves persistence and visibility on %q", server, db, clusterPlugin)
	}
	if strings.EqualFold(e["ENABLE_ES"], "true") {
		bad("%q: ENABLE_ES puts visibility in Elasticsearch; the cluster test proves SQL visibility on %q", server, clusterPlugin)
	}
	dyn := dcOr(e["DYNAMIC_CONFIG_FILE_PATH"], clusterDynamicConfigDefault)
	if !path.IsAbs(dyn) {
		dyn = path.Join(clusterServerWorkdir, dyn)
	}
	b, from, ok, err := dcMountedFile(fsys, c, s, dyn)
	switch {
	case !ok:
		bad("%q: the dynamic configuration %s is not mounted: the server does not start without it", server, dyn)
	case err != nil || b == nil:
		bad("%q: the dynamic configuration %s is on %s, not from the project: %v", server, dyn, from, err)
	default:
		if err := yaml.Unmarshal(b, &map[string]any{}); err != nil {
			bad("%q: the dynamic configuration %s (%s): %v", server, dyn, from, err)
		}
	}

	// Which service runs each command, and where in its script.
	type at struct {
		service string
		index   int
	}
	runs := map[string][]at{}
	for _, n := range names {
		for i, argv := range dcScriptCommands(c.Services[n]) {
			k := strings.Join(argv, " ")
			runs[k] = append(runs[k], at{n, i})
		}
	}
	// find requires cmds to run in one service, in order, and returns it.
	find := func(cmds [][]string) string {
		service, last := "", -1
		for _, argv := range cmds {
			k := strings.Join(argv, " ")
			i := slices.IndexFunc(runs[k], func(a at) bool { return service == "" || a.service == service })
			switch {
			case i < 0 && service == "":
				bad("no service runs `%s`", k)
				return ""
			case i < 0:
				bad("%q does not run `%s`", service, k)
				return service
			case runs[k][i].index <= last:
				bad("%q runs `%s` too early: the cluster test runs it after the commands before it", service, k)
			}
			service, last = runs[k][i].service, runs[k][i].index
		}
		return service
	}
	schema := find(clusterSchemaCommands(dcOr(e["DBNAME"], clusterDefaultDB), dcOr(e["VISIBILITY_DBNAME"], clusterDefaultVisibilityDB)))
	if schema != "" {
		if repo, _ := dcImageName(c.Services[schema].Image); repo != clusterToolsImage {
			bad("%q runs temporal-sql-tool, which its image %s does not hold (%s does)", schema, c.Services[schema].Image, clusterToolsImage)
		}
		if cond := s.DependsOn[schema]; cond != "service_completed_successfully" {
			bad("%q must wait for %q to complete (depends_on condition service_completed_successfully), not %q", server, schema, cond)
		}
		if h, sh := c.Services[schema].Environment["SQL_HOST"], e["POSTGRES_SEEDS"]; h != sh {
			bad("%q sets up the schema on %q, but %q reads %q", schema, h, server, sh)
		}
	}
	setup := find(clusterOperatorCommands())
	if setup != "" {
		if !dcDependsOnTransitively(c, setup, server) {
			bad("%q creates the namespace, but does not wait for %q", setup, server)
		}
		for _, w := range workers {
			if cond := c.Services[w].DependsOn[setup]; cond != "service_completed_successfully" {
				bad("worker %q must wait for %q to complete (depends_on condition service_completed_successfully), not %q", w, setup, cond)
			}
		}
	}
	return p
}

var (
	dcRedirect    = regexp.MustCompile(`^\d*[<>]`)
	dcCommandSeps = regexp.MustCompile(`\|\||&&|;`)
)

// dcScriptCommands are the commands a service runs: its entrypoint and
// command as one, or, for `sh -c SCRIPT`, each command of the script (lines
// joined where one ends in "||", "&&" or "\", then split at those and at
// ";"; redirections dropped).
func dcScriptCommands(s *dcService) [][]string {
	argv := append(slices.Clone(s.Entrypoint), s.Command...)
	if len(argv) < 3 || (argv[0] != "sh" && argv[0] != "/bin/sh") || !strings.HasPrefix(argv[1], "-") || !strings.Contains(argv[1], "c") {
		if len(argv) == 0 {
			return nil
		}
		return [][]string{argv}
	}
	var cmds [][]string
	var line strings.Builder
	for _, l := range strings.Split(argv[2], "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "#") {
			continue
		}
		line.WriteString(strings.TrimSuffix(l, "\\") + " ")
		if strings.HasSuffix(l, "||") || strings.HasSuffix(l, "&&") || strings.HasSuffix(l, "\\") {
			continue
		}
		for _, part := range dcCommandSeps.Split(line.String(), -1) {
			words := slices.DeleteFunc(dcShellFields(part), func(w string) bool { return dcRedirect.MatchString(w) })
			if len(words) > 0 {
				cmds = append(cmds, words)
			}
		}
		line.Reset()
	}
	return cmds
}
