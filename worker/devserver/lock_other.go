//go:build !unix

package devserver

// lockDataDir does nothing where flock is missing: there, keeping one server per DataDir
// is up to the caller.
func lockDataDir(string) (func(), error) { return func() {}, nil }
