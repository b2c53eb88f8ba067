// Package connectorstest holds in-memory fakes of connectors.Marketing and
// connectors.CRM, shared by every test that needs the sync to run without a
// network: the workflow unit tests and the starter's end-to-end test. One set
// of fakes means one set of rules to keep in step with the interfaces; the
// connectors themselves are tested against the HTTP emulators instead
// (mailchimptest, netsuitetest, salesforcetest), which these fakes do not
// replace.
//
// The fakes are safe for concurrent use: the workflows' activities call them
// from worker goroutines while the test inspects them. Seeding and inspection
// go through methods for that reason, and inspection returns copies.
package connectorstest

import (
	"strconv"

	"github.com/optoutsync/optoutsync/connectors"
)

// page cuts one bounded page out of all, with the offset as the opaque
// cursor, so that the fakes page exactly as the interface promises and a
// test with a small page size exercises the workflow's paging.
func page[T any](all []T, cursor string, size int) ([]T, string) {
	if size <= 0 || size > connectors.MaxPageSize {
		size = connectors.MaxPageSize
	}
	off, _ := strconv.Atoi(cursor)
	off = min(max(off, 0), len(all))
	end := min(off+size, len(all))
	next := ""
	if end < len(all) {
		next = strconv.Itoa(end)
	}
	return all[off:end], next
}
