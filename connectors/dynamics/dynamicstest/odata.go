//lint:file-ignore ST1005 the emulator answers with the Dataverse error texts themselves, capitals and full stops included

package dynamicstest

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// codeProperty is Dataverse's code for an unknown property or a query it
// cannot parse (reference A3; an OSS fixture, not a verified capture).
const codeProperty = "0x80060888"

// codeNotFound is the code of a record that does not exist (reference A6).
const codeNotFound = "0x80040217"

var resourcePattern = regexp.MustCompile(`^([a-z]+)(?:\(([0-9a-fA-F-]{36})\))?(?:/([a-z_]+))?$`)

// resource serves the entity sets, single records and marketing lists.
func (s *Server) resource(w http.ResponseWriter, r *http.Request, rest string) {
	m := resourcePattern.FindStringSubmatch(rest)
	if m == nil {
		writeError(w, http.StatusNotFound, "", "Resource not found for the segment '"+rest+"'.")
		return
	}
	set, id, nav := m[1], strings.ToLower(m[2]), m[3]
	opts, err := parseOptions(r.URL.RawQuery)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeProperty, err.Error())
		return
	}
	if set == "lists" {
		switch {
		case id == "" || r.Method != http.MethodGet:
			writeError(w, http.StatusMethodNotAllowed, "0x8006088a", "The emulator serves marketing lists read-only, one at a time (GET lists(<listid>)).")
		case nav == "":
			s.getList(w, r, id, opts)
		default:
			s.listMembers(w, r, id, nav, opts)
		}
		return
	}
	s.mu.Lock()
	e := s.entities[set]
	s.mu.Unlock()
	if e == nil {
		writeError(w, http.StatusNotFound, "0x80060888", "Resource not found for the segment '"+set+"'.")
		return
	}
	switch {
	case nav != "":
		writeError(w, http.StatusBadRequest, codeProperty, "Could not find a property named '"+nav+"' on type 'Microsoft.Dynamics.CRM."+e.logical+"'.")
	case id == "" && r.Method == http.MethodGet && opts.fetchXML != "":
		s.fetch(w, r, e, opts)
	case id == "" && r.Method == http.MethodGet:
		s.query(w, r, e, opts, nil)
	case id != "" && r.Method == http.MethodGet:
		s.getRecord(w, e, id, opts)
	case id != "" && r.Method == http.MethodPatch:
		s.patch(w, r, e, id)
	default:
		writeError(w, http.StatusMethodNotAllowed, "0x8006088a", "The emulator does not support "+r.Method+" on '"+rest+"'.")
	}
}

// options are a request's query options.
type options struct {
	sel       []string
	filter    string
	orderby   string
	top       int
	skiptoken string
	fetchXML  string
}

// parseOptions reads the query options the connector sends and refuses the
// others with a clear message. Values are percent-decoded; a literal "+"
// must be sent as %2B (reference A4).
func parseOptions(raw string) (options, error) {
	var o options
	o.top = -1
	if raw == "" {
		return o, nil
	}
	for _, kv := range strings.Split(raw, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		k, err1 := url.QueryUnescape(k)
		v, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil {
			return o, fmt.Errorf("The query string is not correctly encoded: %q", kv)
		}
		switch k {
		case "$select":
			for _, c := range strings.Split(v, ",") {
				o.sel = append(o.sel, strings.TrimSpace(c))
			}
		case "$filter":
			o.filter = v
		case "$orderby":
			o.orderby = v
		case "$top":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return o, fmt.Errorf("Invalid value '%s' for $top query option found.", v)
			}
			o.top = n
		case "$skiptoken":
			o.skiptoken = v
		case "fetchXml":
			o.fetchXML = v
		case "$skip":
			// Dataverse has no $skip (reference A4).
			return o, fmt.Errorf("The query parameter $skip is not supported")
		case "$expand", "$count", "$apply", "$search", "$compute", "$levels", "$format":
			return o, fmt.Errorf("The query option %s is not supported by the emulator (the connector does not send it)", k)
		default:
			if strings.HasPrefix(k, "$") {
				return o, fmt.Errorf("The query parameter '%s' is not supported.", k)
			}
			// Other parameters (parameter aliases) are not used by the connector.
			return o, fmt.Errorf("The query parameter '%s' is not supported by the emulator.", k)
		}
	}
	return o, nil
}

// prefer reads the Prefer header's preferences.
type prefer struct {
	maxPage        int
	annotations    string
	continueOnErr  bool
	representation bool
}

func parsePrefer(h http.Header) prefer {
	var p prefer
	for _, line := range h.Values("Prefer") {
		for _, part := range strings.Split(line, ",") {
			part = strings.TrimSpace(part)
			k, v, _ := strings.Cut(part, "=")
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "odata.maxpagesize":
				p.maxPage, _ = strconv.Atoi(strings.TrimSpace(v))
			case "odata.include-annotations":
				p.annotations = strings.Trim(strings.TrimSpace(v), `"`)
			case "odata.continue-on-error":
				p.continueOnErr = true
			case "return":
				p.representation = strings.TrimSpace(v) == "representation"
			}
		}
	}
	return p
}

// ---- $filter ----

type node struct {
	op   string // and, or, not, eq, ne, gt, ge, lt, le, contains, startswith, endswith; in (see fold)
	l, r *node
	col  string
	typ  colType
	lit  any
	// in: the case-folded literals of an or of string eq comparisons, by
	// column; orig is that or, for a value that is not a string.
	in   map[string]map[string]bool
	orig *node
}

// fold replaces each or of eq comparisons of string columns with string
// literals (a lookup's "emailaddress1 eq 'a' or emailaddress1 eq 'b' or
// ...") by one set lookup per column: the same answer, without comparing
// every literal with every record under the server's lock.
func fold(n *node) *node {
	if n == nil {
		return nil
	}
	switch n.op {
	case "or":
		var leaves []*node
		var flatten func(*node) bool
		flatten = func(x *node) bool {
			if x.op == "or" {
				return flatten(x.l) && flatten(x.r)
			}
			if _, ok := x.lit.(string); !ok || x.op != "eq" || x.typ != ctString {
				return false
			}
			leaves = append(leaves, x)
			return true
		}
		if flatten(n) {
			in := map[string]map[string]bool{}
			for _, x := range leaves {
				if in[x.col] == nil {
					in[x.col] = map[string]bool{}
				}
				in[x.col][strings.ToLower(x.lit.(string))] = true
			}
			return &node{op: "in", in: in, orig: n}
		}
		n.l, n.r = fold(n.l), fold(n.r)
	case "and", "not":
		n.l, n.r = fold(n.l), fold(n.r)
	}
	return n
}

type filterParser struct {
	src  string
	toks []token
	i    int
	ent  *entity
}

type token struct {
	text string
	str  bool // a quoted string literal, unescaped
	pos  int
}

func tokenize(src string) ([]token, error) {
	var out []token
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == ' ' || c == '\t':
			i++
		case c == '(' || c == ')' || c == ',':
			out = append(out, token{text: string(c), pos: i})
			i++
		case c == '\'':
			var b strings.Builder
			j := i + 1
			for {
				if j >= len(src) {
					return nil, fmt.Errorf("There is an unterminated literal at position %d in '%s'.", i, src)
				}
				if src[j] == '\'' {
					if j+1 < len(src) && src[j+1] == '\'' {
						b.WriteByte('\'')
						j += 2
						continue
					}
					break
				}
				b.WriteByte(src[j])
				j++
			}
			out = append(out, token{text: b.String(), str: true, pos: i})
			i = j + 1
		default:
			j := i
			for j < len(src) && !strings.ContainsRune(" \t(),'", rune(src[j])) {
				j++
			}
			out = append(out, token{text: src[i:j], pos: i})
			i = j
		}
	}
	return out, nil
}

func parseFilter(src string, e *entity) (*node, error) {
	toks, err := tokenize(src)
	if err != nil {
		return nil, err
	}
	p := &filterParser{src: src, toks: toks, ent: e}
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.i < len(p.toks) {
		return nil, fmt.Errorf("Syntax error at position %d in '%s'.", p.toks[p.i].pos, src)
	}
	return fold(n), nil
}

func (p *filterParser) peek() (token, bool) {
	if p.i < len(p.toks) {
		return p.toks[p.i], true
	}
	return token{}, false
}

func (p *filterParser) keyword(w string) bool {
	t, ok := p.peek()
	if ok && !t.str && t.text == w {
		p.i++
		return true
	}
	return false
}

func (p *filterParser) errAt(msg string) error {
	pos := len(p.src)
	if t, ok := p.peek(); ok {
		pos = t.pos
	}
	return fmt.Errorf("%s at position %d in '%s'.", msg, pos, p.src)
}

func (p *filterParser) or() (*node, error) {
	l, err := p.and()
	for err == nil && p.keyword("or") {
		var r *node
		if r, err = p.and(); err == nil {
			l = &node{op: "or", l: l, r: r}
		}
	}
	return l, err
}

func (p *filterParser) and() (*node, error) {
	l, err := p.unary()
	for err == nil && p.keyword("and") {
		var r *node
		if r, err = p.unary(); err == nil {
			l = &node{op: "and", l: l, r: r}
		}
	}
	return l, err
}

func (p *filterParser) unary() (*node, error) {
	if p.keyword("not") {
		x, err := p.unary()
		return &node{op: "not", l: x}, err
	}
	if p.keyword("(") {
		n, err := p.or()
		if err != nil {
			return nil, err
		}
		if !p.keyword(")") {
			return nil, p.errAt("')' or operator expected")
		}
		return n, nil
	}
	t, ok := p.peek()
	if !ok || t.str {
		return nil, p.errAt("Expression expected")
	}
	p.i++
	switch strings.ToLower(t.text) {
	case "contains", "startswith", "endswith":
		if !p.keyword("(") {
			return nil, p.errAt("'(' expected")
		}
		col, typ, err := p.column()
		if err != nil {
			return nil, err
		}
		if !p.keyword(",") {
			return nil, p.errAt("',' expected")
		}
		lit, ok := p.peek()
		if !ok || !lit.str {
			return nil, p.errAt("A string literal expected")
		}
		p.i++
		if !p.keyword(")") {
			return nil, p.errAt("')' expected")
		}
		if typ != ctString {
			return nil, fmt.Errorf("No function signature for the function with name '%s' matches the specified arguments.", t.text)
		}
		return &node{op: strings.ToLower(t.text), col: col, typ: typ, lit: lit.text}, nil
	}
	if strings.Contains(t.text, ".") || p.i < len(p.toks) && p.toks[p.i].text == "(" {
		return nil, fmt.Errorf("The function or operator '%s' is not supported by the emulator (the connector does not send it).", t.text)
	}
	p.i--
	col, typ, err := p.column()
	if err != nil {
		return nil, err
	}
	opTok, ok := p.peek()
	if !ok || opTok.str {
		return nil, p.errAt("Operator expected")
	}
	op := opTok.text
	switch op {
	case "eq", "ne", "gt", "ge", "lt", "le":
	default:
		return nil, fmt.Errorf("The operator '%s' at position %d in '%s' is not supported by the emulator.", op, opTok.pos, p.src)
	}
	p.i++
	lt, ok := p.peek()
	if !ok {
		return nil, p.errAt("Expression expected")
	}
	p.i++
	v, err := literal(lt, typ)
	if err != nil {
		return nil, fmt.Errorf("%v (%s at position %d)", err, col, lt.pos)
	}
	return &node{op: op, col: col, typ: typ, lit: v}, nil
}

func (p *filterParser) column() (string, colType, error) {
	t, ok := p.peek()
	if !ok || t.str {
		return "", 0, p.errAt("Property name expected")
	}
	p.i++
	typ, known := p.ent.cols[t.text]
	if !known {
		return "", 0, fmt.Errorf("Could not find a property named '%s' on type 'Microsoft.Dynamics.CRM.%s'.", t.text, p.ent.logical)
	}
	return t.text, typ, nil
}

var guidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// literal reads a literal of a column's type; null fits any.
func literal(t token, typ colType) (any, error) {
	if !t.str && t.text == "null" {
		return nil, nil
	}
	mismatch := fmt.Errorf("A binary operator with incompatible types was detected. Found operand types '%s' and the literal '%s'", edmName(typ), t.text)
	switch typ {
	case ctString:
		if !t.str {
			return nil, mismatch
		}
		return t.text, nil
	case ctBool:
		if t.str || (t.text != "true" && t.text != "false") {
			return nil, mismatch
		}
		return t.text == "true", nil
	case ctTime:
		// The DateTimeOffset literal is unquoted (reference A4).
		if t.str {
			return nil, mismatch
		}
		v, err := time.Parse(time.RFC3339Nano, t.text)
		if err != nil {
			return nil, fmt.Errorf("The DateTimeOffset text '%s' should be in format 'yyyy-mm-ddThh:mm:ss('.'s+)?(zzzzzz)?'", t.text)
		}
		return v, nil
	case ctGUID:
		if t.str || !guidPattern.MatchString(t.text) {
			return nil, mismatch
		}
		return strings.ToLower(t.text), nil
	case ctInt:
		n, err := strconv.ParseInt(t.text, 10, 64)
		if t.str || err != nil {
			return nil, mismatch
		}
		return n, nil
	}
	return nil, mismatch
}

func edmName(t colType) string {
	return [...]string{"Edm.String", "Edm.Boolean", "Edm.DateTimeOffset", "Edm.Guid", "Edm.Int64"}[t]
}

// compare orders two values of one column: null first, strings without
// regard to case ("All filters using string values are case insensitive",
// reference A4).
func compare(a, b any) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	switch x := a.(type) {
	case string:
		y, _ := b.(string)
		return compareFold(x, y)
	case bool:
		y, _ := b.(bool)
		switch {
		case x == y:
			return 0
		case !x:
			return -1
		}
		return 1
	case time.Time:
		y, _ := b.(time.Time)
		return x.Compare(y)
	case int:
		return compare(int64(x), b)
	case int64:
		var y int64
		switch v := b.(type) {
		case int64:
			y = v
		case int:
			y = int64(v)
		}
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	}
	return 0
}

func (n *node) eval(r *record) bool {
	switch n.op {
	case "in":
		for col, set := range n.in {
			switch v := r.get(col).(type) {
			case string:
				if set[strings.ToLower(v)] {
					return true
				}
			case nil:
			default:
				return n.orig.eval(r)
			}
		}
		return false
	case "and":
		return n.l.eval(r) && n.r.eval(r)
	case "or":
		return n.l.eval(r) || n.r.eval(r)
	case "not":
		return !n.l.eval(r)
	case "contains", "startswith", "endswith":
		v, _ := r.get(n.col).(string)
		v, lit := strings.ToLower(v), strings.ToLower(n.lit.(string))
		switch n.op {
		case "contains":
			return strings.Contains(v, lit)
		case "startswith":
			return strings.HasPrefix(v, lit)
		}
		return strings.HasSuffix(v, lit)
	}
	v := r.get(n.col)
	if n.lit == nil || v == nil {
		switch n.op {
		case "eq":
			return v == nil && n.lit == nil
		case "ne":
			return (v == nil) != (n.lit == nil)
		}
		return false
	}
	c := compare(v, n.lit)
	switch n.op {
	case "eq":
		return c == 0
	case "ne":
		return c != 0
	case "gt":
		return c > 0
	case "ge":
		return c >= 0
	case "lt":
		return c < 0
	}
	return c <= 0
}

// ---- collections ----

type order struct {
	col  string
	desc bool
}

func parseOrderBy(src string, e *entity) ([]order, error) {
	var out []order
	if strings.TrimSpace(src) == "" {
		return nil, nil
	}
	for _, part := range strings.Split(src, ",") {
		f := strings.Fields(part)
		if len(f) == 0 || len(f) > 2 {
			return nil, fmt.Errorf("Syntax error in $orderby '%s'.", src)
		}
		if _, ok := e.cols[f[0]]; !ok {
			return nil, fmt.Errorf("Could not find a property named '%s' on type 'Microsoft.Dynamics.CRM.%s'.", f[0], e.logical)
		}
		o := order{col: f[0]}
		if len(f) == 2 {
			switch f[1] {
			case "asc":
			case "desc":
				o.desc = true
			default:
				return nil, fmt.Errorf("Syntax error in $orderby '%s': '%s' is not asc or desc.", src, f[1])
			}
		}
		out = append(out, o)
	}
	return out, nil
}

func checkSelect(sel []string, e *entity) error {
	for _, c := range sel {
		if _, ok := e.cols[c]; !ok {
			return fmt.Errorf("Could not find a property named '%s' on type 'Microsoft.Dynamics.CRM.%s'.", c, e.logical)
		}
	}
	return nil
}

// query answers a GET on a collection: the entity set, or (with source)
// the records a list's navigation property holds.
func (s *Server) query(w http.ResponseWriter, r *http.Request, e *entity, o options, source func(*record) bool) {
	f, ord, err := s.parseQuery(e, o)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeProperty, err.Error())
		return
	}
	// Without an order, Dataverse orders by the primary key (reference A4).
	ord = append(ord, order{col: e.key})
	pref := parsePrefer(r.Header)
	page, paged := s.opts.MaxPageSize, true
	switch {
	case pref.maxPage > 0:
		page = min(pref.maxPage, s.opts.MaxPageSize)
		w.Header().Set("Preference-Applied", "odata.maxpagesize="+strconv.Itoa(page))
	case o.top >= 0:
		// $top is ignored when maxpagesize is given (reference A4).
		page, paged = min(o.top, s.opts.MaxPageSize), false
	}
	var after []any
	pageNo := 1
	if o.skiptoken != "" {
		if after, pageNo, err = s.decodeSkipToken(o.skiptoken, e, ord); err != nil {
			writeError(w, http.StatusBadRequest, codeProperty, err.Error())
			return
		}
	}
	s.mu.Lock()
	var rows []*record
	for _, rec := range e.recs {
		if rec.deleted || source != nil && !source(rec) || f != nil && !f.eval(rec) {
			continue
		}
		if after != nil && compareKey(rec, ord, after) <= 0 {
			continue
		}
		rows = append(rows, rec)
	}
	slices.SortFunc(rows, func(a, b *record) int { return compareRows(a, b, ord) })
	more := len(rows) > page
	rows = rows[:min(page, len(rows))]
	body := s.render(e, o.sel, rows)
	var next string
	if more && paged && len(rows) > 0 {
		next = s.nextLink(r, e, ord, rows[0], rows[len(rows)-1], pageNo+1)
	}
	s.mu.Unlock()
	writeCollection(w, s.URL+APIPath+"/$metadata#"+e.set+selectSuffix(o.sel), body, next, nil)
}

// parseQuery checks a query's $filter, $select and $orderby against the
// table's columns, which seeding may add to, under the lock.
func (s *Server) parseQuery(e *entity, o options) (*node, []order, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var f *node
	if o.filter != "" {
		var err error
		if f, err = parseFilter(o.filter, e); err != nil {
			return nil, nil, err
		}
	}
	if err := checkSelect(o.sel, e); err != nil {
		return nil, nil, err
	}
	ord, err := parseOrderBy(o.orderby, e)
	return f, ord, err
}

func selectSuffix(sel []string) string {
	if len(sel) == 0 {
		return ""
	}
	return "(" + strings.Join(sel, ",") + ")"
}

// compareFold is strings.Compare of the two lower-cased, without
// lower-casing ASCII strings into new ones: a sort of 20,000 rows compares
// some 300,000 pairs.
func compareFold(x, y string) int {
	for i := 0; i < len(x) && i < len(y); i++ {
		a, b := x[i], y[i]
		if a >= utf8.RuneSelf || b >= utf8.RuneSelf {
			return strings.Compare(strings.ToLower(x[i:]), strings.ToLower(y[i:]))
		}
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return cmp.Compare(a, b)
		}
	}
	return cmp.Compare(len(x), len(y))
}

func compareRows(a, b *record, ord []order) int {
	for _, o := range ord {
		c := compare(a.get(o.col), b.get(o.col))
		if o.desc {
			c = -c
		}
		if c != 0 {
			return c
		}
	}
	return 0
}

func compareKey(r *record, ord []order, key []any) int {
	for i, o := range ord {
		c := compare(r.get(o.col), key[i])
		if o.desc {
			c = -c
		}
		if c != 0 {
			return c
		}
	}
	return 0
}

// formatTime writes a DateTimeOffset. UNCONFIRMED (reference A3): the Z
// suffix and whether a fraction is written (Options.FractionalSeconds).
func (s *Server) formatTime(t time.Time) string {
	if s.opts.FractionalSeconds {
		return t.UTC().Format("2006-01-02T15:04:05.000Z")
	}
	return t.UTC().Format("2006-01-02T15:04:05Z")
}

// render writes rows as OData JSON objects: the etag first, then the
// selected columns (all when none is selected), the primary key always
// (reference A3). The caller holds s.mu.
func (s *Server) render(e *entity, sel []string, rows []*record) []json.RawMessage {
	cols := sel
	if len(cols) == 0 {
		for c := range e.cols {
			cols = append(cols, c)
		}
		slices.Sort(cols)
	}
	if !slices.Contains(cols, e.key) {
		cols = append(slices.Clone(cols), e.key)
	}
	out := make([]json.RawMessage, len(rows))
	for i, rec := range rows {
		var b bytes.Buffer
		fmt.Fprintf(&b, `{"@odata.etag":%q`, fmt.Sprintf(`W/"%d"`, rec.version))
		for _, c := range cols {
			v := rec.get(c)
			if t, ok := v.(time.Time); ok {
				v = s.formatTime(t)
			}
			val, _ := json.Marshal(v)
			fmt.Fprintf(&b, `,%q:%s`, c, val)
		}
		b.WriteByte('}')
		out[i] = b.Bytes()
	}
	return out
}

func writeCollection(w http.ResponseWriter, context string, rows []json.RawMessage, next string, annotations map[string]any) {
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"@odata.context":%q`, context)
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range annotations {
			if !yield(k) {
				return
			}
		}
	}) {
		v, _ := json.Marshal(annotations[k])
		fmt.Fprintf(&b, `,%q:%s`, k, v)
	}
	b.WriteString(`,"value":[`)
	for i, r := range rows {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(r)
	}
	b.WriteByte(']')
	if next != "" {
		fmt.Fprintf(&b, `,"@odata.nextLink":%q`, next)
	}
	b.WriteString("}\n")
	w.Header().Set("Content-Type", "application/json; odata.metadata=minimal")
	w.Header().Set("OData-Version", "4.0")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b.Bytes())
}

// escape percent-encodes as Dataverse's nextLink does, %20 for a space.
func escape(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }

// nextLink is the absolute URL of the next page: the request's own query
// options, then a $skiptoken holding the paging cookie (reference A4). The
// cookie keeps the order columns' last and first values and the primary
// key in braces, upper case.
func (s *Server) nextLink(r *http.Request, e *entity, ord []order, first, last *record, pageNo int) string {
	var inner strings.Builder
	fmt.Fprintf(&inner, `<cookie page="%d">`, pageNo-1)
	for _, o := range ord {
		lv, fv := s.cookieValue(last.get(o.col)), s.cookieValue(first.get(o.col))
		if o.col == e.key {
			lv, fv = "{"+strings.ToUpper(lv)+"}", "{"+strings.ToUpper(fv)+"}"
		}
		fmt.Fprintf(&inner, `<%s last="%s" first="%s" />`, o.col, html.EscapeString(lv), html.EscapeString(fv))
	}
	inner.WriteString(`</cookie>`)
	tracking := ` istracking="False"`
	if s.opts.SkipTokenWithoutTracking {
		tracking = ""
	}
	cookie := fmt.Sprintf(`<cookie pagenumber="%d" pagingcookie="%s"%s />`, pageNo, escape(escape(inner.String())), tracking)
	var keep []string
	for _, kv := range strings.Split(r.URL.RawQuery, "&") {
		if kv != "" && !strings.HasPrefix(kv, "$skiptoken=") && !strings.HasPrefix(kv, "%24skiptoken=") {
			keep = append(keep, kv)
		}
	}
	keep = append(keep, "$skiptoken="+escape(cookie))
	return s.URL + r.URL.Path + "?" + strings.Join(keep, "&")
}

func (s *Server) cookieValue(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case string:
		return x
	}
	return fmt.Sprint(v)
}

var (
	pagingCookiePattern = regexp.MustCompile(`^<cookie pagenumber="(\d+)" pagingcookie="([^"]*)"( istracking="(?:True|False)")? />$`)
	cookieColPattern    = regexp.MustCompile(`<([a-z0-9_]+) last="([^"]*)" first="[^"]*" />`)
)

// decodeSkipToken reads a cookie this server wrote: the key of the last
// row returned, in the query's order.
func (s *Server) decodeSkipToken(tok string, e *entity, ord []order) ([]any, int, error) {
	bad := fmt.Errorf("The $skiptoken is not a paging cookie of this query.")
	m := pagingCookiePattern.FindStringSubmatch(tok)
	if m == nil {
		return nil, 0, bad
	}
	pageNo, _ := strconv.Atoi(m[1])
	inner, err := url.QueryUnescape(m[2])
	if err == nil {
		inner, err = url.QueryUnescape(inner)
	}
	if err != nil {
		return nil, 0, bad
	}
	cols := cookieColPattern.FindAllStringSubmatch(inner, -1)
	if len(cols) != len(ord) {
		return nil, 0, bad
	}
	key := make([]any, len(ord))
	for i, o := range ord {
		if cols[i][1] != o.col {
			return nil, 0, bad
		}
		raw := html.UnescapeString(cols[i][2])
		if o.col == e.key {
			raw = strings.ToLower(strings.Trim(raw, "{}"))
		}
		switch e.cols[o.col] {
		case ctTime:
			if raw == "" {
				key[i] = nil
				continue
			}
			t, err := time.Parse(time.RFC3339Nano, raw)
			if err != nil {
				return nil, 0, bad
			}
			key[i] = t
		case ctBool:
			key[i] = raw == "true"
		case ctInt:
			n, _ := strconv.ParseInt(raw, 10, 64)
			key[i] = n
		default:
			key[i] = raw
			if raw == "" {
				key[i] = nil
			}
		}
	}
	return key, pageNo, nil
}

func (s *Server) getRecord(w http.ResponseWriter, e *entity, id string, o options) {
	if _, _, err := s.parseQuery(e, options{sel: o.sel}); err != nil {
		writeError(w, http.StatusBadRequest, codeProperty, err.Error())
		return
	}
	s.mu.Lock()
	rec := s.byID[id]
	if rec == nil || rec.deleted || rec.ent != e {
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, codeNotFound, fmt.Sprintf("%s With Id = %s Does Not Exist", e.logical, id))
		return
	}
	body := s.render(e, o.sel, []*record{rec})[0]
	s.mu.Unlock()
	var m map[string]json.RawMessage
	_ = json.Unmarshal(body, &m)
	ctx, _ := json.Marshal(s.URL + APIPath + "/$metadata#" + e.set + selectSuffix(o.sel) + "/$entity")
	m["@odata.context"] = ctx
	w.Header().Set("ETag", fmt.Sprintf(`W/"%d"`, rec.version))
	writeJSON(w, http.StatusOK, m)
}

// ---- marketing lists ----

var listCols = []string{"listid", "listname", "type", "query", "createdfromcode", "statecode", "membercount", "modifiedon"}

func (s *Server) getList(w http.ResponseWriter, r *http.Request, id string, o options) {
	for _, c := range o.sel {
		if !slices.Contains(listCols, c) {
			writeError(w, http.StatusBadRequest, codeProperty, "Could not find a property named '"+c+"' on type 'Microsoft.Dynamics.CRM.list'.")
			return
		}
	}
	s.mu.Lock()
	l := s.lists[id]
	if l == nil {
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, codeNotFound, "list With Id = "+id+" Does Not Exist")
		return
	}
	vals := map[string]any{
		"listid": l.id, "listname": l.name, "type": l.dynamic, "query": nilIfEmpty(l.query),
		"createdfromcode": l.code, "statecode": 0, "membercount": len(l.members), "modifiedon": s.formatTime(l.modified),
	}
	version := l.version
	s.mu.Unlock()
	sel := o.sel
	if len(sel) == 0 {
		sel = listCols
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"@odata.context":%q,"@odata.etag":%q`, s.URL+APIPath+"/$metadata#lists"+selectSuffix(o.sel)+"/$entity", fmt.Sprintf(`W/"%d"`, version))
	if !slices.Contains(sel, "listid") {
		sel = append(slices.Clone(sel), "listid")
	}
	for _, c := range sel {
		v, _ := json.Marshal(vals[c])
		fmt.Fprintf(&b, `,%q:%s`, c, v)
	}
	b.WriteString("}\n")
	w.Header().Set("Content-Type", "application/json; odata.metadata=minimal")
	w.Header().Set("OData-Version", "4.0")
	_, _ = w.Write(b.Bytes())
}

// listMembers answers lists(<id>)/list<table>_association: a static
// list's members of that table. A dynamic list stores no members, so the
// navigation property is empty; its members come from its query.
func (s *Server) listMembers(w http.ResponseWriter, r *http.Request, id, nav string, o options) {
	s.mu.Lock()
	l := s.lists[id]
	var e *entity
	for _, cand := range s.entities {
		if cand.nav == nav {
			e = cand
		}
	}
	s.mu.Unlock()
	switch {
	case l == nil:
		writeError(w, http.StatusNotFound, codeNotFound, "list With Id = "+id+" Does Not Exist")
		return
	case e == nil:
		writeError(w, http.StatusBadRequest, codeProperty, "Could not find a property named '"+nav+"' on type 'Microsoft.Dynamics.CRM.list'.")
		return
	case o.fetchXML != "":
		writeError(w, http.StatusBadRequest, codeProperty, "fetchXml is only accepted on an entity set.")
		return
	}
	s.query(w, r, e, o, func(rec *record) bool { return !l.dynamic && l.member[rec.id] })
}

// ---- writes ----

// journalKey carries a changeset's journal in a request's context.
type journalKey struct{}

// journal records the records a changeset changed, to roll them back.
type journal struct{ saved []*record }

// patch updates a record (reference A6). With If-Match: * a missing record
// is 404 and nothing is created; without it a PATCH is an upsert.
func (s *Server) patch(w http.ResponseWriter, r *http.Request, e *entity, id string) {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "0x80048d19", "The content type '"+ct+"' is not supported; send application/json.")
		return
	}
	var body map[string]any
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	if err := dec.Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "0x80048d19", "Error identified in Payload provided by the user for Entity :'"+e.set+"': "+err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range body {
		typ, ok := e.cols[k]
		if !ok {
			writeError(w, http.StatusBadRequest, codeProperty, fmt.Sprintf("The property '%s' does not exist on type 'Microsoft.Dynamics.CRM.%s'. Make sure to only use property names that are defined by the type.", k, e.logical))
			return
		}
		if !e.writable(k) {
			writeError(w, http.StatusBadRequest, "0x80048d0b", fmt.Sprintf("The property '%s' of type 'Microsoft.Dynamics.CRM.%s' is read-only.", k, e.logical))
			return
		}
		switch v.(type) {
		case nil:
			continue
		case bool:
			if typ == ctBool {
				continue
			}
		case string:
			if typ == ctString {
				continue
			}
		}
		writeError(w, http.StatusBadRequest, "0x80048d19", fmt.Sprintf("Error identified in Payload provided by the user for Entity :'%s': cannot convert the value of '%s' to %s.", e.set, k, edmName(typ)))
		return
	}
	rec := s.byID[id]
	if rec != nil && (rec.deleted || rec.ent != e) {
		rec = nil
	}
	match, noneMatch := r.Header.Get("If-Match"), r.Header.Get("If-None-Match")
	switch {
	case rec == nil && match != "":
		writeError(w, http.StatusNotFound, codeNotFound, fmt.Sprintf("%s With Id = %s Does Not Exist", e.logical, id))
		return
	case rec != nil && noneMatch == "*":
		writeError(w, http.StatusPreconditionFailed, "", "A record with matching key values already exists.")
		return
	case rec != nil && match != "" && match != "*" && match != fmt.Sprintf(`W/"%d"`, rec.version):
		writeError(w, http.StatusPreconditionFailed, "", "The version of the existing record doesn't match the RowVersion property provided.")
		return
	case rec == nil:
		// An upsert: the record is created with the given id.
		rec = s.insert(e.set, Person{})
		delete(s.byID, rec.id)
		rec.id = id
		s.byID[id] = rec
	default:
		if j, _ := r.Context().Value(journalKey{}).(*journal); j != nil {
			j.saved = append(j.saved, rec.clone())
		}
	}
	for k, v := range body {
		rec.set(k, v)
	}
	s.touch(rec)
	entityID := s.URL + APIPath + "/" + e.set + "(" + rec.id + ")"
	w.Header().Set("Location", entityID)
	w.Header().Set("OData-EntityId", entityID)
	if parsePrefer(r.Header).representation {
		b := s.render(e, nil, []*record{rec})[0]
		w.Header().Set("Content-Type", "application/json; odata.metadata=minimal")
		w.Header().Set("OData-Version", "4.0")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b)
		return
	}
	w.Header().Set("OData-Version", "4.0")
	w.WriteHeader(http.StatusNoContent)
}

// restore rolls a changeset back.
func (s *Server) restore(j *journal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(j.saved) - 1; i >= 0; i-- {
		old := j.saved[i]
		if cur := s.byID[old.id]; cur != nil {
			*cur = *old
		}
	}
}
