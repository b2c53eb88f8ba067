package netsuitetest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/optoutsync/optoutsync/connectors"
)

// maxRows is SuiteQL's cap on the rows one query can page through
// (without SuiteAnalytics Connect).
const maxRows = 100_000

// paging reads limit and offset with SuiteQL's rules: limit 1..1000
// (default 1000), offset a multiple of limit.
//
// UNCONFIRMED: the exact code and wording NetSuite gives a bad limit or
// offset. We chose 400 INVALID_PARAMETER with a detail naming the parameter.
func paging(w http.ResponseWriter, r *http.Request) (limit, offset int, ok bool) {
	limit, offset = 1000, 0
	q := r.URL.Query()
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, 400, "INVALID_PARAMETER", "Invalid value for the query parameter limit: "+v+". The value must be between 1 and 1000.", "")
			return 0, 0, false
		}
		limit = n
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n%limit != 0 {
			writeError(w, 400, "INVALID_PARAMETER", "Invalid value for the query parameter offset: "+v+". The offset must be a multiple of the limit.", "")
			return 0, 0, false
		}
		if n >= maxRows {
			writeError(w, 400, "INVALID_PARAMETER", "Invalid value for the query parameter offset: "+v+". A query can return at most 100000 results.", "")
			return 0, 0, false
		}
		offset = n
	}
	return limit, offset, true
}

// window is the part [offset, offset+limit) of n results that a page
// holds, empty past the end.
func window(n, limit, offset int) (from, to int) {
	return min(offset, n), min(offset+limit, n)
}

// writeCollection writes the collection envelope of SuiteQL and saved
// search results: links (next only when there is more), count, offset,
// hasMore, totalResults (total) and the page's items. It is called after
// the server's lock is released: the items are the page's own copies.
func (s *Server) writeCollection(w http.ResponseWriter, r *http.Request, items []map[string]any, total, limit, offset int) {
	_, end := window(total, limit, offset)
	if items == nil {
		items = []map[string]any{}
	}
	link := func(rel string, off int) map[string]string {
		u := *r.URL
		q := u.Query()
		q.Set("limit", strconv.Itoa(limit))
		q.Set("offset", strconv.Itoa(off))
		u.RawQuery = q.Encode()
		return map[string]string{"rel": rel, "href": s.URL + u.RequestURI()}
	}
	hasMore := end < total
	links := []map[string]string{link("first", 0)}
	if offset > 0 {
		links = append(links, link("prev", max(offset-limit, 0)))
	}
	if hasMore {
		links = append(links, link("next", offset+limit))
	}
	last := 0
	if total > 0 {
		last = (total - 1) / limit * limit
	}
	links = append(links, link("last", last), link("self", offset))
	writeJSON(w, http.StatusOK, "application/vnd.oracle.resource+json; type=collection", map[string]any{
		"links":        links,
		"count":        len(items),
		"offset":       offset,
		"hasMore":      hasMore,
		"totalResults": total,
		"items":        items,
	})
}

func (s *Server) handleSuiteQL(w http.ResponseWriter, r *http.Request) {
	// UNCONFIRMED: the answer to a query without "Prefer: transient"
	// (which Oracle documents as required). We chose 400 INVALID_HEADER.
	if !strings.Contains(strings.ToLower(r.Header.Get("Prefer")), "transient") {
		writeError(w, 400, "INVALID_HEADER", "Invalid Prefer header. The transient preference is required for SuiteQL queries.", "")
		return
	}
	limit, offset, ok := paging(w, r)
	if !ok {
		return
	}
	var body struct {
		Q      string `json:"q"`
		Params []any  `json:"params"`
	}
	dec := json.NewDecoder(r.Body)
	dec.UseNumber()
	if err := dec.Decode(&body); err != nil {
		writeError(w, 400, "INVALID_REQUEST", "The request could not be understood by the server due to malformed syntax.", "")
		return
	}
	params := make([]string, len(body.Params))
	for i, p := range body.Params {
		params[i] = fmt.Sprint(p)
	}
	s.mu.Lock()
	q, err := parseQuery(body.Q, params, s.loc, s.dates, func(name string) (func(string) bool, bool) {
		t, ok := s.tables[name]
		if !ok {
			return nil, false
		}
		return t.has, true
	})
	if err != nil {
		s.mu.Unlock()
		// The shape of the real answer to a query SuiteQL cannot run.
		writeError(w, 400, "INVALID_PARAMETER", "Invalid search query. Detailed unprocessed description follows. Search error occurred: "+err.Error(), "q")
		return
	}
	t := s.tables[q.table]
	items, total := q.run(t, t.rows, s.loc, s.dates, limit, offset)
	s.mu.Unlock()
	s.writeCollection(w, r, items, total, limit, offset)
}

// handleSavedSearch runs a saved search. PARTIALLY CONFIRMED path; the row
// shape is our choice: "id" (internal id), "recordType" and "email", the
// properties every entity search result carries, in the collection
// envelope.
func (s *Server) handleSavedSearch(w http.ResponseWriter, r *http.Request) {
	limit, offset, ok := paging(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	refs, ok := s.searches[r.PathValue("id")]
	if !ok {
		s.mu.Unlock()
		// UNCONFIRMED: we answer an unknown saved search like a missing record.
		writeError(w, 404, "NONEXISTENT_ID", "Record does not exist.", "")
		return
	}
	seen := map[connectors.RecordRef]bool{}
	var hits []*entity
	var hitRefs []connectors.RecordRef
	for _, ref := range refs {
		e := s.lookup(ref.Type, ref.ID)
		if e == nil || seen[ref] {
			continue
		}
		seen[ref] = true
		hits, hitRefs = append(hits, e), append(hitRefs, ref)
	}
	from, to := window(len(hits), limit, offset)
	items := make([]map[string]any, 0, to-from)
	for i := from; i < to; i++ {
		row := map[string]any{"links": []any{}, "id": hitRefs[i].ID, "recordType": hitRefs[i].Type}
		if hits[i].Email != "" {
			row["email"] = hits[i].Email
		}
		items = append(items, row)
	}
	s.mu.Unlock()
	s.writeCollection(w, r, items, len(hits), limit, offset)
}

func (s *Server) handleRecord(w http.ResponseWriter, r *http.Request) {
	typ, id := r.PathValue("type"), r.PathValue("id")
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.tables[typ]; !ok {
		// UNCONFIRMED: NetSuite's answer for a record type this emulator
		// does not know; we chose 404 NONEXISTENT_ID.
		writeError(w, 404, "NONEXISTENT_ID", "Record type '"+typ+"' does not exist.", "")
		return
	}
	e := s.lookup(typ, id)
	if e == nil {
		writeError(w, 404, "NONEXISTENT_ID", "Record does not exist.", "")
		return
	}
	switch r.Method {
	case http.MethodGet:
		s.getRecord(w, r, typ, e)
	case http.MethodPatch:
		s.patchRecord(w, r, typ, e)
	default:
		writeError(w, 405, "INVALID_REQUEST", "The request method "+r.Method+" is not supported by this emulator.", "")
	}
}

func (s *Server) recordURL(typ string, id int64) string {
	return s.URL + "/services/rest/record/v1/" + typ + "/" + strconv.FormatInt(id, 10)
}

// restTime is how REST shows a date-time property.
func restTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

func (s *Server) getRecord(w http.ResponseWriter, r *http.Request, typ string, e *entity) {
	body := map[string]any{
		"links":                    []map[string]string{{"rel": "self", "href": s.recordURL(typ, e.id)}},
		"id":                       strconv.FormatInt(e.id, 10),
		"isInactive":               e.IsInactive,
		"globalSubscriptionStatus": map[string]string{"id": e.SubscriptionStatus, "refName": subscriptionNames[e.SubscriptionStatus]},
		"lastModifiedDate":         restTime(e.LastModified),
		"dateCreated":              restTime(e.DateCreated),
	}
	for k, v := range map[string]string{"email": e.Email, "firstName": e.FirstName, "lastName": e.LastName, "companyName": e.CompanyName, "entityId": e.EntityID} {
		if v != "" {
			body[k] = v
		}
	}
	for k, v := range e.Custom {
		body[k] = v
	}
	if f := r.URL.Query().Get("fields"); f != "" {
		keep := strings.Split(f, ",")
		for k := range body {
			if k != "links" && k != "id" && !slices.Contains(keep, k) {
				delete(body, k)
			}
		}
	}
	writeJSON(w, http.StatusOK, "application/vnd.oracle.resource+json; type=singular", body)
}

// patchRecord applies a partial update: all of it or, on the first invalid
// property, none of it.
func (s *Server) patchRecord(w http.ResponseWriter, r *http.Request, typ string, e *entity) {
	if s.failing[connectors.RecordRef{Type: typ, ID: strconv.FormatInt(e.id, 10)}] {
		writeError(w, http.StatusInternalServerError, "UNEXPECTED_ERROR", "An unexpected error occurred.", "")
		return
	}
	var body map[string]json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeError(w, 400, "INVALID_REQUEST", "The request could not be understood by the server due to malformed syntax.", "")
		return
	}
	// X-NetSuite-PropertyNameValidation defaults to "warning": an unknown
	// property is ignored. With "error" it fails the request.
	// UNCONFIRMED: the code of that failure; we chose 400 INVALID_CONTENT.
	strict := strings.EqualFold(r.Header.Get("X-NetSuite-PropertyNameValidation"), "error")
	t := s.tables[typ]
	next := e.Entity
	next.Custom = make(map[string]any, len(e.Custom))
	for k, v := range e.Custom {
		next.Custom[k] = v
	}
	invalid := func(prop, detail string) {
		writeError(w, 400, "INVALID_CONTENT", "Error while accessing a resource. "+detail, prop)
	}
	for prop, raw := range body {
		isNull := bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
		var sv string
		strField := map[string]*string{"email": &next.Email, "firstName": &next.FirstName, "lastName": &next.LastName, "companyName": &next.CompanyName, "entityId": &next.EntityID}[prop]
		switch {
		case strField != nil:
			if !isNull {
				if err := json.Unmarshal(raw, &sv); err != nil {
					invalid(prop, "You have entered an Invalid Field Value "+string(raw)+" for the following field: "+strings.ToLower(prop))
					return
				}
			}
			*strField = sv
		case prop == "isInactive":
			if err := json.Unmarshal(raw, &next.IsInactive); err != nil {
				invalid(prop, "You have entered an Invalid Field Value "+string(raw)+" for the following field: isinactive")
				return
			}
		case prop == "globalSubscriptionStatus":
			var sel struct {
				ID json.Number `json:"id"`
			}
			if err := json.Unmarshal(raw, &sel); err != nil || subscriptionNames[sel.ID.String()] == "" {
				invalid(prop, "You have entered an Invalid Field Value "+string(raw)+" for the following field: globalsubscriptionstatus")
				return
			}
			// UNCONFIRMED: whether REST refuses Confirmed Opt-In/Out from
			// an integration. NetSuite's help says only the recipient can
			// set them, so by default we refuse them with 400
			// INVALID_CONTENT; Options.AllowConfirmedStatus lifts it.
			if id := sel.ID.String(); (id == "3" || id == "4") && !s.allowConf {
				invalid(prop, "You cannot set the subscription status to "+subscriptionNames[id]+": only the recipient can.")
				return
			}
			next.SubscriptionStatus = sel.ID.String()
		case prop == "id" || prop == "links" || prop == "lastModifiedDate" || prop == "dateCreated" || prop == "refName":
			// Read-only properties are ignored, as NetSuite does.
		default:
			isBool, known := t.custom[strings.ToLower(prop)]
			switch {
			case !known && strict:
				invalid(prop, "The property name "+prop+" is not valid for the record "+typ+".")
				return
			case !known:
				continue
			case isNull:
				delete(next.Custom, strings.ToLower(prop))
			case isBool:
				var b bool
				if err := json.Unmarshal(raw, &b); err != nil {
					invalid(prop, "You have entered an Invalid Field Value "+string(raw)+" for the following field: "+prop)
					return
				}
				next.Custom[strings.ToLower(prop)] = b
			default:
				var v any
				_ = json.Unmarshal(raw, &v)
				next.Custom[strings.ToLower(prop)] = v
			}
		}
	}
	// Every save moves lastModifiedDate, whether or not a value changed.
	next.LastModified = s.now()
	e.Entity = next
	w.Header().Set("Location", s.recordURL(typ, e.id))
	w.WriteHeader(http.StatusNoContent)
}
