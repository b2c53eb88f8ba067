//lint:file-ignore ST1005 the emulator answers with Bullhorn's own error texts, capitals and full stops included

package bullhorntest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// serveREST answers the calls under {restUrl}; the session is checked.
func (s *Server) serveREST(w http.ResponseWriter, r *http.Request, path string) {
	parts := strings.Split(path, "/")
	switch {
	case path == "ping" && r.Method == http.MethodGet:
		s.mu.Lock()
		var exp int64
		if tok := r.URL.Query().Get("BhRestToken"); tok != "" {
			exp = s.sessions[tok].UnixMilli()
		}
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]int64{"sessionExpires": exp})
	case parts[0] == "search" && len(parts) == 2:
		s.serveSearch(w, r, parts[1])
	case parts[0] == "query" && len(parts) == 2:
		s.serveQuery(w, r, parts[1])
	case parts[0] == "entity" && len(parts) == 4 && parts[1] == "Tearsheet" && r.Method == http.MethodGet:
		s.serveTearsheetMembers(w, r, parts[2], parts[3])
	case parts[0] == "entity" && len(parts) == 3 && r.Method == http.MethodGet:
		s.serveGet(w, r, parts[1], parts[2])
	case parts[0] == "entity" && len(parts) == 3 && r.Method == http.MethodPost:
		s.serveUpdate(w, r, parts[1], parts[2])
	default:
		// Anything else the emulator does not serve, named clearly.
		writeError(w, http.StatusNotFound, "errors.notFound", fmt.Sprintf("The emulator does not serve %s %s", r.Method, path))
	}
}

// ---- reading ----

// fieldList parses the fields parameter: required, never "*" (B2), every
// name known to the entity. Errors are 400 with Bullhorn's wording.
func fieldList(e *entityDef, raw string) ([]*fieldDef, *bhError) {
	if raw == "" {
		return nil, &bhError{ErrorMessage: "fields or layout is required", ErrorMessageKey: "errors.missingFields", ErrorCode: 400}
	}
	if raw == "*" {
		return nil, &bhError{ErrorMessage: "You are not authorized to request all fields.", ErrorMessageKey: "errors.allFieldsNotAllowed", ErrorCode: 400}
	}
	var out []*fieldDef
	pos := 0
	for name := range strings.SplitSeq(raw, ",") {
		f := e.field(strings.TrimSpace(name))
		if f == nil {
			return nil, &bhError{ErrorMessage: fmt.Sprintf("Invalid field '%s' at position %d.", name, pos), ErrorCode: 400}
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
		pos += len(name) + 1
	}
	return out, nil
}

func render(r *record, fields []*fieldDef) map[string]any {
	out := make(map[string]any, len(fields)+1)
	for _, f := range fields {
		out[f.name] = r.vals[f.name]
	}
	return out
}

// paging reads start and count: count defaults to 20 (the SDK's default),
// above MaxCount is cut to it or refused (Options.RejectOverMaxCount).
func (s *Server) paging(q url.Values) (start, count int, e *bhError) {
	start, count = 0, min(20, s.opts.MaxCount)
	if v := q.Get("start"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, 0, &bhError{ErrorMessage: "start must be a number 0 or more", ErrorCode: 400}
		}
		start = n
	}
	if v := q.Get("count"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return 0, 0, &bhError{ErrorMessage: "count must be a positive number", ErrorCode: 400}
		}
		count = n
	}
	if count > s.opts.MaxCount {
		if s.opts.RejectOverMaxCount {
			return 0, 0, &bhError{ErrorMessage: fmt.Sprintf("count %d is over the maximum of %d", count, s.opts.MaxCount), ErrorCode: 400}
		}
		count = s.opts.MaxCount
	}
	return start, count, nil
}

func writeBH(w http.ResponseWriter, e *bhError) { writeJSON(w, e.ErrorCode, e) }

// bodyParam reads the POST variant of search and query: {"query": …} or
// {"where": …} in a JSON body (B3); the other parameters stay in the URL.
func bodyParam(r *http.Request, name string) (string, *bhError) {
	if r.Method == http.MethodGet {
		return r.URL.Query().Get(name), nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return "", &bhError{ErrorMessage: "cannot read the body", ErrorCode: 400}
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return "", &bhError{ErrorMessage: "the body is not JSON", ErrorCode: 400}
	}
	v, _ := m[name].(string)
	return v, nil
}

type sortKey struct {
	f    *fieldDef
	desc bool
}

func parseSort(e *entityDef, raw string) ([]sortKey, *bhError) {
	var out []sortKey
	if raw == "" {
		return []sortKey{{f: e.field("id")}}, nil
	}
	for name := range strings.SplitSeq(raw, ",") {
		k := sortKey{}
		name = strings.TrimSpace(name)
		if strings.HasPrefix(name, "-") {
			k.desc, name = true, name[1:]
		}
		if k.f = e.field(name); k.f == nil {
			return nil, &bhError{ErrorMessage: "Bad sort: unknown field " + name, ErrorCode: 400}
		}
		out = append(out, k)
	}
	return out, nil
}

func cmpAny(a, b any) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	if n := compare(a, b); n != incomparable {
		return n
	}
	return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
}

// run filters an entity's records and orders them; the caller holds s.mu.
// Reading in (dateLastModified, id) order starts at the first record a
// top-level lower bound on dateLastModified lets through.
func (s *Server) run(e *entityDef, x expr, keys []sortKey) []*record {
	t := s.tables[e.name]
	byMod := len(keys) >= 1 && keys[0].f.name == "dateLastModified" && !keys[0].desc &&
		(len(keys) == 1 || len(keys) == 2 && keys[1].f.name == "id" && !keys[1].desc)
	var src []*record
	if byMod {
		src = t.sorted()
		if lo, ok := lowerBound(x); ok {
			i, _ := slices.BinarySearchFunc(src, lo, func(r *record, lo int64) int { return cmpNum(float64(r.dlm()), float64(lo)) })
			src = src[i:]
		}
	} else {
		src = make([]*record, 0, len(t.ids))
		for _, id := range t.ids {
			src = append(src, t.byID[id])
		}
	}
	var out []*record
	for _, r := range src {
		if x.eval(s, r) {
			out = append(out, r)
		}
	}
	if !byMod {
		slices.SortStableFunc(out, func(a, b *record) int {
			for _, k := range keys {
				n := cmpAny(a.vals[k.f.name], b.vals[k.f.name])
				if k.desc {
					n = -n
				}
				if n != 0 {
					return n
				}
			}
			return cmpNum(float64(a.id), float64(b.id))
		})
	}
	return out
}

// lowerBound finds a lower bound on dateLastModified that the whole of x
// requires (a range or comparison ANDed at the top level).
func lowerBound(x expr) (int64, bool) {
	switch v := x.(type) {
	case rangeExpr:
		if v.f.name == "dateLastModified" && v.lo != nil {
			return *v.lo, true
		}
	case cmpExpr:
		if n, ok := v.lit.(int64); ok && v.f.name == "dateLastModified" && (v.op == ">" || v.op == ">=") {
			return n, true
		}
	case andExpr:
		best, found := int64(0), false
		for _, e := range v {
			if n, ok := lowerBound(e); ok && (!found || n > best) {
				best, found = n, true
			}
		}
		return best, found
	}
	return 0, false
}

// serveSearch is /search/{entity} (B3): Lucene in query (or the POST
// body), the {total, start, count, data} envelope, _score on every row,
// and ids only when no fields are asked.
func (s *Server) serveSearch(w http.ResponseWriter, r *http.Request, entity string) {
	e := entities[entity]
	if e == nil {
		writeError(w, http.StatusBadRequest, "errors.searchUnknownEntity", fmt.Sprintf("Search is not supported for entity %s.", entity))
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		writeError(w, http.StatusMethodNotAllowed, "", "Method not allowed")
		return
	}
	q := r.URL.Query()
	lq, berr := bodyParam(r, "query")
	if berr != nil {
		writeBH(w, berr)
		return
	}
	if lq == "" {
		writeError(w, http.StatusBadRequest, "errors.missingParameter", "query is required")
		return
	}
	var fields []*fieldDef
	if raw := q.Get("fields"); raw != "" {
		if fields, berr = fieldList(e, raw); berr != nil {
			writeBH(w, berr)
			return
		}
	}
	sortRaw := q.Get("sort")
	if sortRaw == "" {
		sortRaw = q.Get("orderBy")
	}
	keys, berr := parseSort(e, sortRaw)
	if berr != nil {
		writeBH(w, berr)
		return
	}
	start, count, berr := s.paging(q)
	if berr != nil {
		writeBH(w, berr)
		return
	}
	x, err := s.parseLucene(e, lq)
	if err != nil {
		writeError(w, http.StatusBadRequest, "errors.invalidQuery", err.Error())
		return
	}
	s.mu.Lock()
	rows := s.run(e, x, keys)
	page := rows[min(start, len(rows)):min(start+count, len(rows))]
	data := make([]any, len(page))
	for i, rec := range page {
		if fields == nil {
			data[i] = rec.id
			continue
		}
		m := render(rec, fields)
		m["_score"] = 1.0
		data[i] = m
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"total": len(rows), "start": start, "count": len(page), "data": data})
}

// serveQuery is /query/{entity} (B3): JPQL in where (or the POST body).
// Indexed entities refuse it: Candidate always (live-confirmed), the
// others with Options.QueryRejectsAll. total comes with showTotalMatched.
func (s *Server) serveQuery(w http.ResponseWriter, r *http.Request, entity string) {
	e := entities[entity]
	if e == nil {
		writeError(w, http.StatusBadRequest, "errors.unknownEntity", fmt.Sprintf("Unknown entity %s.", entity))
		return
	}
	if entity == "Candidate" || s.opts.QueryRejectsAll {
		writeError(w, http.StatusBadRequest, "errors.queryIndexedEntity", fmt.Sprintf("Query operation not supported for %s, please use /search call instead.", entity))
		return
	}
	q := r.URL.Query()
	where, berr := bodyParam(r, "where")
	if berr != nil {
		writeBH(w, berr)
		return
	}
	if where == "" {
		writeError(w, http.StatusBadRequest, "errors.missingParameter", "where is required")
		return
	}
	fields, berr := fieldList(e, q.Get("fields"))
	if berr != nil {
		writeBH(w, berr)
		return
	}
	keys, berr := parseSort(e, q.Get("orderBy"))
	if berr != nil {
		writeBH(w, berr)
		return
	}
	start, count, berr := s.paging(q)
	if berr != nil {
		writeBH(w, berr)
		return
	}
	x, err := parseWhere(e, where)
	if err != nil {
		writeError(w, http.StatusBadRequest, "errors.invalidQuery", err.Error())
		return
	}
	s.mu.Lock()
	rows := s.run(e, x, keys)
	page := rows[min(start, len(rows)):min(start+count, len(rows))]
	data := make([]any, len(page))
	for i, rec := range page {
		data[i] = render(rec, fields)
	}
	s.mu.Unlock()
	out := map[string]any{"start": start, "count": len(page), "data": data}
	if q.Get("totalOnly") == "true" {
		writeJSON(w, http.StatusOK, map[string]any{"total": len(rows)})
		return
	}
	if q.Get("showTotalMatched") == "true" {
		out["total"] = len(rows)
	}
	writeJSON(w, http.StatusOK, out)
}

// serveGet is entity/{E}/{id[,id…]} (B2): one id answers {"data":{…}}
// (the SDK's wrapper; UNCONFIRMED against the bare object of the docs),
// several {"data":[…]} with those that exist, 404 when none does.
func (s *Server) serveGet(w http.ResponseWriter, r *http.Request, entity, idList string) {
	e := entities[entity]
	if e == nil {
		writeError(w, http.StatusBadRequest, "errors.unknownEntity", fmt.Sprintf("Unknown entity %s.", entity))
		return
	}
	fields, berr := fieldList(e, r.URL.Query().Get("fields"))
	if berr != nil {
		writeBH(w, berr)
		return
	}
	var ids []int64
	for v := range strings.SplitSeq(idList, ",") {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, "errors.badId", fmt.Sprintf("'%s' is not an entity id.", v))
			return
		}
		ids = append(ids, id)
	}
	s.mu.Lock()
	t := s.tables[entity]
	var data []any
	for _, id := range ids {
		if rec := t.byID[id]; rec != nil {
			data = append(data, render(rec, fields))
		}
	}
	s.mu.Unlock()
	switch {
	case len(data) == 0:
		writeError(w, http.StatusNotFound, "errors.entityNotFound", fmt.Sprintf("Entity %s with id %s not found.", entity, idList))
	case len(ids) == 1:
		writeJSON(w, http.StatusOK, map[string]any{"data": data[0]})
	default:
		writeJSON(w, http.StatusOK, map[string]any{"data": data})
	}
}

// serveTearsheetMembers is entity/Tearsheet/{id}/{candidates|clientContacts}
// (B4), paged by start and count in id order. UNCONFIRMED whether total
// is answered: here only with showTotalMatched=true, as the SDK asks.
func (s *Server) serveTearsheetMembers(w http.ResponseWriter, r *http.Request, rawID, assoc string) {
	var e *entityDef
	for _, x := range entities {
		if x.assoc != "" && x.assoc == assoc {
			e = x
		}
	}
	if e == nil {
		writeError(w, http.StatusBadRequest, "errors.invalidAssociation", fmt.Sprintf("Tearsheet has no association %s (the emulator serves candidates and clientContacts).", assoc))
		return
	}
	id, err := strconv.ParseInt(rawID, 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, "errors.badId", fmt.Sprintf("'%s' is not an entity id.", rawID))
		return
	}
	q := r.URL.Query()
	fields, berr := fieldList(e, q.Get("fields"))
	if berr != nil {
		writeBH(w, berr)
		return
	}
	start, count, berr := s.paging(q)
	if berr != nil {
		writeBH(w, berr)
		return
	}
	s.mu.Lock()
	ts := s.tearsheets[id]
	if ts == nil {
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, "errors.entityNotFound", fmt.Sprintf("Entity Tearsheet with id %d not found.", id))
		return
	}
	var ids []int64
	for m := range ts.members[assoc] {
		ids = append(ids, m)
	}
	slices.Sort(ids)
	page := ids[min(start, len(ids)):min(start+count, len(ids))]
	data := make([]any, 0, len(page))
	for _, m := range page {
		if rec := s.tables[e.name].byID[m]; rec != nil {
			data = append(data, render(rec, fields))
		}
	}
	s.mu.Unlock()
	out := map[string]any{"start": start, "count": len(data), "data": data}
	if q.Get("showTotalMatched") == "true" {
		out["total"] = len(ids)
	}
	writeJSON(w, http.StatusOK, out)
}

// ---- writing ----

// serveUpdate is POST entity/{E}/{id} (B5): a JSON object of the fields to
// change; read-only and unknown fields are 400; the answer names the
// change. UNCONFIRMED: changedEntityType in it (answered), data (not).
func (s *Server) serveUpdate(w http.ResponseWriter, r *http.Request, entity, rawID string) {
	e := entities[entity]
	if e == nil {
		writeError(w, http.StatusBadRequest, "errors.unknownEntity", fmt.Sprintf("Unknown entity %s.", entity))
		return
	}
	id, err := strconv.ParseInt(rawID, 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, "errors.badId", fmt.Sprintf("'%s' is not an entity id.", rawID))
		return
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, "", "cannot read the body")
		return
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(b, &body); err != nil {
		writeError(w, http.StatusBadRequest, "errors.invalidJson", "The request body is not a JSON object.")
		return
	}
	type change struct {
		f *fieldDef
		v any
	}
	var changes []change
	for name, raw := range body {
		f := e.field(name)
		if f == nil {
			writeError(w, http.StatusBadRequest, "errors.invalidField", fmt.Sprintf("Invalid field '%s'.", name))
			return
		}
		if name == "id" {
			continue // the docs' body repeats it
		}
		if f.readOnly {
			writeError(w, http.StatusBadRequest, "errors.readOnlyField", fmt.Sprintf("Field '%s' is read-only.", name))
			return
		}
		v, err := decodeValue(f, raw)
		if err != nil {
			writeError(w, http.StatusBadRequest, "errors.invalidValue", err.Error())
			return
		}
		changes = append(changes, change{f, v})
	}
	s.mu.Lock()
	rec := s.tables[entity].byID[id]
	if rec == nil {
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, "errors.entityNotFound", fmt.Sprintf("Entity %s with id %d not found.", entity, id))
		return
	}
	for _, c := range changes {
		rec.vals[c.f.name] = c.v
	}
	s.touch(rec)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"changedEntityType": entity, "changedEntityId": id, "changeType": "UPDATE"})
}

func decodeValue(f *fieldDef, raw json.RawMessage) (any, error) {
	if string(raw) == "null" {
		if f.typ == ftBool {
			return nil, fmt.Errorf("Field '%s' cannot be null.", f.name)
		}
		return nil, nil
	}
	switch f.typ {
	case ftBool:
		var v bool
		if json.Unmarshal(raw, &v) != nil {
			return nil, fmt.Errorf("Field '%s' takes true or false.", f.name)
		}
		return v, nil
	case ftInt, ftTimestamp:
		var v int64
		if json.Unmarshal(raw, &v) != nil {
			return nil, fmt.Errorf("Field '%s' takes a whole number.", f.name)
		}
		return v, nil
	case ftFloat:
		var v float64
		if json.Unmarshal(raw, &v) != nil {
			return nil, fmt.Errorf("Field '%s' takes a number.", f.name)
		}
		return v, nil
	}
	var v string
	if json.Unmarshal(raw, &v) != nil {
		return nil, fmt.Errorf("Field '%s' takes text.", f.name)
	}
	if f.maxLen > 0 && len([]rune(v)) > f.maxLen {
		return nil, fmt.Errorf("Field '%s' is longer than %d characters.", f.name, f.maxLen)
	}
	return v, nil
}
