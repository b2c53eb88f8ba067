package salesforce

// A query answers in batches of up to 2,000 records (Sforce-Query-Options:
// batchSize), and a page holds at most connectors.MaxPageSize (1,000), so
// a batch usually fills two pages: the rest of a batch is kept
// (connectors.Leftovers) and the chain of queryMore calls a read is, half
// as long. Without it (a cursor used in another process, or after
// connectors.LeftoverTTL) the next page reads the batch again from its
// locator, or the keyset, as before.

// leftover is the batch a cursor resumes in: the answer, the locator it
// came from ("" for a query's first batch) and the records of it already
// returned.
type leftover struct {
	res  queryResult
	url  string
	skip int
}
