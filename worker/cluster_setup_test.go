package main

import (
	"slices"

	"go.temporal.io/server/common/persistence/sql/sqlplugin/postgresql"

	"github.com/optoutsync/optoutsync/workflows"
)

// How an operator prepares a Temporal cluster for optout-sync, stated once:
// TestCluster (cluster_test.go, build tag cluster) does exactly this
// against a Temporal server of the pinned version on PostgreSQL, and
// TestComposeFile holds docker-compose.yml to it.

const (
	// clusterNamespace is the namespace the operator creates for the
	// workers (TEMPORAL_NAMESPACE).
	clusterNamespace = "optout-sync"
	// clusterRetention is how long the namespace keeps closed runs, for
	// `temporal workflow list` and the Web UI; the consent ledger, not
	// Temporal, keeps what must last.
	clusterRetention = "168h"

	// clusterPlugin is the server's SQL plugin for PostgreSQL, used for
	// both persistence and visibility (SQL visibility: no Elasticsearch).
	clusterPlugin = postgresql.PluginName

	// The server's configuration template (`temporal-server start` without
	// a configuration file, as the temporalio/server image runs it) names
	// the two databases DBNAME and VISIBILITY_DBNAME, these by default.
	clusterDefaultDB           = "temporal"
	clusterDefaultVisibilityDB = "temporal_visibility"
	// The template reads its dynamic configuration from
	// DYNAMIC_CONFIG_FILE_PATH, this by default; the server does not start
	// without the file. Relative paths are from the image's working
	// directory.
	clusterDynamicConfigDefault = "/etc/temporal/config/dynamicconfig/docker.yaml"
	clusterServerWorkdir        = "/etc/temporal"

	// The images of the server and of its tools (temporal-sql-tool and the
	// temporal CLI), tagged with the server's version.
	clusterServerImage = "temporalio/server"
	clusterToolsImage  = "temporalio/admin-tools"
)

// clusterSchemaCommands set up the databases, before the server starts:
// the server's own schema tool and the schema embedded in it, for each of
// the two databases. Each may be run again (on every `docker compose up`):
// an existing database is kept, a schema at version 0.0 or later is not
// reset, and update-schema applies only the versions it lacks.
func clusterSchemaCommands(db, visibilityDB string) [][]string {
	var cmds [][]string
	for _, d := range []struct{ name, schema string }{
		{db, "postgresql/v12/temporal"},
		{visibilityDB, "postgresql/v12/visibility"},
	} {
		tool := []string{"temporal-sql-tool", "--plugin", clusterPlugin, "--db", d.name}
		cmds = append(cmds,
			append(slices.Clone(tool), "create"),
			append(slices.Clone(tool), "setup-schema", "-v", "0.0"),
			append(slices.Clone(tool), "update-schema", "--schema-name", d.schema),
		)
	}
	return cmds
}

// clusterOperatorCommands create the namespace and the search attribute
// the workflows are listed by, once the server runs.
func clusterOperatorCommands() [][]string {
	return [][]string{
		{"temporal", "operator", "namespace", "create", "--namespace", clusterNamespace, "--retention", clusterRetention},
		{"temporal", "operator", "search-attribute", "create", "--namespace", clusterNamespace,
			"--name", workflows.IntegrationKey.GetName(), "--type", workflows.IntegrationKey.GetValueType().String()},
	}
}
