package salesforcetest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// saveError is one error of a SaveResult.
type saveError struct {
	StatusCode string   `json:"statusCode"`
	Message    string   `json:"message"`
	Fields     []string `json:"fields"`
}

// saveResult is the sObject Collections answer for one record, in request
// order; a failed record carries no id.
type saveResult struct {
	ID      string      `json:"id,omitempty"`
	Success bool        `json:"success"`
	Errors  []saveError `json:"errors"`
}

// change is one validated record update, applied only if the call commits.
type change struct {
	rec    *record
	fields map[*fieldDef]any
}

// prepare validates one record of an update against the store; the caller
// holds s.mu. typ is "" when the body gave none.
func (s *Server) prepare(typ, id string, body map[string]json.RawMessage) (*change, *saveError) {
	fail := func(code, msg string, fields ...string) (*change, *saveError) {
		if fields == nil {
			fields = []string{}
		}
		return nil, &saveError{StatusCode: code, Message: msg, Fields: fields}
	}
	// UNCONFIRMED: the answer to a record without attributes.type; we chose
	// a per-record INVALID_TYPE.
	obj := s.schema.object(typ)
	if typ == "" || obj == nil {
		return fail("INVALID_TYPE", "Must send a concrete entity type.")
	}
	if id == "" {
		return fail("MISSING_ARGUMENT", "Id not specified in an update call")
	}
	if !validID(id) || !strings.HasPrefix(id, obj.prefix) {
		return fail("MALFORMED_ID", fmt.Sprintf("%s ID: id value of incorrect type: %s", obj.name, id), "Id")
	}
	if len(id) == 15 {
		id += idSuffix(id)
	}
	rec := s.records[id]
	// UNCONFIRMED: the code for a well-formed id that never existed; we
	// chose INVALID_CROSS_REFERENCE_KEY, and ENTITY_IS_DELETED for one in
	// the recycle bin.
	if rec == nil {
		return fail("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
	}
	if rec.deleted {
		return fail("ENTITY_IS_DELETED", "entity is deleted")
	}
	if conv, _ := rec.vals["IsConverted"].(bool); conv {
		return fail("CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead")
	}
	ch := &change{rec: rec, fields: map[*fieldDef]any{}}
	for name, raw := range body {
		if name == "attributes" || strings.EqualFold(name, "id") {
			continue
		}
		f := obj.field(name)
		if f == nil {
			return fail("INVALID_FIELD", fmt.Sprintf("No such column '%s' on sobject of type %s", name, obj.name), name)
		}
		if !f.writable {
			return fail("INVALID_FIELD_FOR_INSERT_UPDATE", fmt.Sprintf("Unable to create/update fields: %s. Please check the security settings of this field and verify that it is read/write for your profile or permission set.", f.name), f.name)
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return fail("JSON_PARSER_ERROR", "Cannot deserialize value of field "+f.name, f.name)
		}
		ok := v == nil
		switch v.(type) {
		case bool:
			ok = f.typ == ftBool
		case string:
			ok = f.typ == ftString || f.typ == ftRef
		case float64:
			ok = f.typ == ftNumber
		}
		if v == nil && f.typ == ftBool {
			ok = false // a checkbox is never null
		}
		if !ok {
			return fail("INVALID_TYPE_ON_FIELD_IN_RECORD", fmt.Sprintf("%s: value not of required type: %s", f.name, strings.Trim(string(raw), `"`)), f.name)
		}
		ch.fields[f] = v
	}
	return ch, nil
}

func (s *Server) apply(ch *change) {
	for f, v := range ch.fields {
		s.set(ch.rec, f, v)
	}
	// An update moves the stamps even when no value changed, as a DML
	// update does in Salesforce.
	s.touch(ch.rec)
}

// serveCollectionsUpdate is PATCH /composite/sobjects: up to 200 records,
// a SaveResult each in request order; with allOrNone, one failure rolls
// every record back.
func (s *Server) serveCollectionsUpdate(w http.ResponseWriter, r *http.Request) {
	var body struct {
		AllOrNone bool                         `json:"allOrNone"`
		Records   []map[string]json.RawMessage `json:"records"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "JSON_PARSER_ERROR", "The request body is not valid JSON: "+err.Error())
		return
	}
	if len(body.Records) > 200 {
		writeError(w, http.StatusBadRequest, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records into this call")
		return
	}
	results := make([]saveResult, len(body.Records))
	changes := make([]*change, len(body.Records))
	failed := false
	for i, raw := range body.Records {
		var attrs struct {
			Type string `json:"type"`
		}
		if a, ok := raw["attributes"]; ok {
			_ = json.Unmarshal(a, &attrs)
		}
		var id string
		for k, v := range raw {
			if strings.EqualFold(k, "id") {
				_ = json.Unmarshal(v, &id)
			}
		}
		ch, serr := s.prepare(attrs.Type, id, raw)
		if serr != nil {
			results[i] = saveResult{Errors: []saveError{*serr}}
			failed = true
			continue
		}
		changes[i] = ch
		results[i] = saveResult{ID: ch.rec.id(), Success: true, Errors: []saveError{}}
	}
	if body.AllOrNone && failed {
		for i := range results {
			if results[i].Success {
				results[i] = saveResult{Errors: []saveError{{
					StatusCode: "ALL_OR_NONE_OPERATION_ROLLED_BACK",
					Message:    "Record rolled back because not all records were valid and the request was using AllOrNone header",
					Fields:     []string{},
				}}}
			}
		}
		writeJSON(w, http.StatusOK, results)
		return
	}
	for _, ch := range changes {
		if ch != nil {
			s.apply(ch)
		}
	}
	writeJSON(w, http.StatusOK, results)
}

// serveRecordUpdate is PATCH /sobjects/{type}/{id}: 204 on success.
func (s *Server) serveRecordUpdate(w http.ResponseWriter, r *http.Request, typ, id string) {
	var body map[string]json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "JSON_PARSER_ERROR", "The request body is not valid JSON: "+err.Error())
		return
	}
	if s.schema.object(typ) == nil {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "The requested resource does not exist")
		return
	}
	ch, serr := s.prepare(typ, id, body)
	if serr != nil {
		status := http.StatusBadRequest
		if serr.StatusCode == "INVALID_CROSS_REFERENCE_KEY" {
			status, serr.StatusCode, serr.Message = http.StatusNotFound, "NOT_FOUND", "The requested resource does not exist"
		}
		writeJSON(w, status, []apiError{{Message: serr.Message, ErrorCode: serr.StatusCode, Fields: serr.Fields}})
		return
	}
	s.apply(ch)
	w.WriteHeader(http.StatusNoContent)
}
