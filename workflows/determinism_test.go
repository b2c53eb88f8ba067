package workflows_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/contrib/tools/workflowcheck/workflow"
	"golang.org/x/tools/go/analysis"
	"golang.org/x/tools/go/analysis/checker"
	"golang.org/x/tools/go/packages"
)

// TestWorkflowsAreDeterministic runs Temporal's workflowcheck analyzer over
// this package, so that CI (which runs only `go test`) catches a map range,
// a time.Now or an I/O call in workflow code before a replay does.
func TestWorkflowsAreDeterministic(t *testing.T) {
	pkgs, err := packages.Load(&packages.Config{Mode: packages.LoadAllSyntax}, "github.com/optoutsync/optoutsync/workflows")
	require.NoError(t, err)
	require.Zero(t, packages.PrintErrors(pkgs), "package load errors")
	// The runtime's allocator can start the GC's goroutines, which the
	// analyzer, reading the standard library from source, would otherwise
	// blame on every allocation; allocation is not workflow non-determinism.
	refs := workflow.DefaultIdentRefs.Clone()
	refs["runtime.mallocgc"] = false
	refs["(*runtime.Frames).Next"] = false
	refs["runtime.gcStart"] = false
	analyzer := workflow.NewChecker(workflow.Config{IdentRefs: refs, SingleLine: true}).NewAnalyzer()
	graph, err := checker.Analyze([]*analysis.Analyzer{analyzer}, pkgs, nil)
	require.NoError(t, err)
	var found []string
	for act := range graph.All() {
		require.NoError(t, act.Err)
		if act.Package.PkgPath != "github.com/optoutsync/optoutsync/workflows" {
			continue // the SDK's own internals are its business
		}
		for _, d := range act.Diagnostics {
			found = append(found, act.Package.Fset.Position(d.Pos).String()+": "+d.Message)
		}
	}
	require.Empty(t, found)
}
