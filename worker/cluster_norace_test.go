//go:build cluster && !race

package main

// raceBuild tells whether this test binary was built with -race; binaries
// the tests build for child processes are built the same way, so that they
// reuse the same compiled packages.
const raceBuild = false
