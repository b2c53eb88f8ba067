package httpx

import (
	"net/http"
	"regexp"
	"strings"
	"sync"
)

// EndpointClass names the endpoint a request hits without what identifies
// a person or a record: the method and the path with every segment that
// may be an id replaced by ":id" ("PATCH /services/rest/record/v1/customer/:id",
// "GET /3.0/lists/:id/members/:id"). The query is dropped (it carries
// filters with addresses). A segment is kept only when it is a plain word
// (letters, '_', '-', '.', '$', no digit but one after three letters, as
// in "oauth2") that is not hex-like, or an API
// version ("v1", "v60.0", "3.0"); everything else, an address, a hash, a number,
// a GUID, is ":id". OData keys ("contacts(<guid>)") keep the entity set.
func EndpointClass(req *http.Request) string {
	segs := strings.Split(strings.Trim(req.URL.EscapedPath(), "/"), "/")
	for i, s := range segs {
		segs[i] = segmentClass(s)
	}
	return req.Method + " /" + strings.Join(segs, "/")
}

var (
	wordSegment    = regexp.MustCompile(`^\$?[A-Za-z][A-Za-z_.\-]{0,39}$|^[A-Za-z]{3,20}[0-9]$`)
	versionSegment = regexp.MustCompile(`^(v[0-9]{1,3}|v?[0-9]{1,3}\.[0-9]{1,3})$`)
	hexSegment     = regexp.MustCompile(`^[0-9A-Fa-f]{8,}$`)
	odataKey       = regexp.MustCompile(`^([A-Za-z_]{1,40})\(.*\)$`)
)

func segmentClass(s string) string {
	switch {
	case s == "":
		return s
	case versionSegment.MatchString(s):
		return s
	case hexSegment.MatchString(s):
		return ":id"
	case wordSegment.MatchString(s):
		return s
	}
	if m := odataKey.FindStringSubmatch(s); m != nil {
		return m[1] + "(:id)"
	}
	return ":id"
}

// maxEndpoints bounds the endpoint classes counted per vendor: past it,
// a new one is counted as "other", so that a vendor path shape the rules
// above do not foresee cannot grow the series without end.
const maxEndpoints = 64

var (
	endpointsMu sync.Mutex
	endpoints   = map[string]map[string]bool{}
)

// endpointClass is EndpointClass, bounded per vendor.
func endpointClass(vendor string, req *http.Request) string {
	e := EndpointClass(req)
	endpointsMu.Lock()
	defer endpointsMu.Unlock()
	seen := endpoints[vendor]
	if seen == nil {
		seen = map[string]bool{}
		endpoints[vendor] = seen
	}
	if !seen[e] {
		if len(seen) >= maxEndpoints {
			return "other"
		}
		seen[e] = true
	}
	return e
}
