package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The production build (-tags nodev) links neither the Temporal server nor
// an emulator, and says so when asked for the dev mode.
func TestTheProductionBuildHasNoDevMode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-tags", "nodev", ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, dep := range strings.Fields(string(out)) {
		require.False(t, strings.HasPrefix(dep, "go.temporal.io/server"), "the production build links %s", dep)
		require.False(t, strings.HasPrefix(dep, "github.com/optoutsync/optoutsync/") && strings.HasSuffix(dep, "test"),
			"the production build links %s", dep)
		require.NotEqual(t, "github.com/optoutsync/optoutsync/worker/devserver", dep)
	}
	bin := buildBinaries(t, false, ".")["worker"]
	for _, flag := range []string{"-dev", "-emulators"} {
		cmd := exec.Command(bin, flag)
		msg, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, flag)
		require.NotZero(t, exit.ExitCode(), flag)
		require.Contains(t, string(msg), "built without the dev mode (-tags nodev)", flag)
		require.Equal(t, 1, strings.Count(string(msg), "\n"), "%s: one line, no dependency graph: %s", flag, msg)
	}
}
