package mailchimptest

import (
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"
)

// status is a member status stored in one byte.
type status uint8

const (
	stNone status = iota
	stSubscribed
	stUnsubscribed
	stCleaned
	stPending
	stTransactional
	stArchived
	// stForgotten is a permanently deleted member: invisible to every read,
	// kept only so that a later add gets "Forgotten Email Not Subscribed".
	stForgotten
)

var statusNames = [...]string{"", "subscribed", "unsubscribed", "cleaned", "pending", "transactional", "archived", "forgotten"}

func (s status) String() string { return statusNames[s] }

func parseStatus(s string) status {
	for i, n := range statusNames[:stForgotten] {
		if i > 0 && n == s {
			return status(i)
		}
	}
	return stNone
}

// member is one audience member, kept small so a list can hold a million of
// them: the address lives in the list's byte arena, the identifiers
// (id, unique_email_id, contact_id, web_id) are derived on read from the
// address, and rarely used data (merge fields, reason, the identity of a
// member whose address changed) sits in side tables.
type member struct {
	emailOff    uint32
	emailLen    uint16
	status      status
	pos         int32 // index of this member's live entry in list.order
	extra       int32 // 1-based index into list.extras; 0 = none
	lastChanged int64 // unix seconds
	optAt       int64 // timestamp_opt, unix seconds; 0 = ""
	signupAt    int64 // timestamp_signup, unix seconds; 0 = ""
	unsubAt     int64 // when the member last became unsubscribed; 0 = never
}

// extra holds what most generated members do not have.
type extra struct {
	merge  map[string]string
	reason string
}

// ident is the stored identity of a member whose identifiers no longer
// derive from its current address: its address changed, or it was created
// on an address a changed member used to have.
type ident struct {
	// origin stands in for the address hash in unique_email_id, web_id and
	// (unless contact is set) contact_id.
	origin [16]byte
	// contact, when hasContact, is the contact_id, unmasked (see contactID).
	contact    [16]byte
	hasContact bool
}

// orderEntry is one entry of the change log. An entry is live when its
// member's pos points back at it; older entries of a member that changed
// again are dead and skipped (and compacted away when they pile up).
type orderEntry struct {
	idx int32
	lc  int64
}

// list is one audience.
type list struct {
	id        string
	name      string
	created   int64
	webID     int
	mergeTags []string

	arena   []byte
	members []member
	extras  []extra
	byHash  map[[16]byte]int32
	// idents holds the members whose identifiers are stored (see ident);
	// contacts and origins index them by their contact_id (unmasked) and
	// origin, so that the path lookup by contact_id finds them and a new
	// member never reuses their identifiers.
	idents   map[int32]ident
	contacts map[[16]byte]int32
	origins  map[[16]byte]int32
	// order holds member indexes sorted by last_changed (ties in the order
	// the changes happened). A change sets last_changed to now, which is
	// never older than the newest entry unless the test clock goes back, so
	// a change is an append, and a since_last_changed query is a binary
	// search plus the members after it, not a scan of the audience.
	order []orderEntry
	dead  int
	// notify, when set, is told of every status or address change (for
	// webhook deliveries): the event type, the member and, for an address
	// change, the old address.
	notify func(typ string, i int32, old string)
}

func newList(id, name string, created int64, tags []string) *list {
	mt := []string{"FNAME", "LNAME", "ADDRESS", "PHONE", "BIRTHDAY"}
	for _, t := range tags {
		if !slices.Contains(mt, t) {
			mt = append(mt, t)
		}
	}
	h := md5.Sum([]byte("list:" + id))
	return &list{
		id: id, name: name, created: created, mergeTags: mt,
		webID:  int(binary.BigEndian.Uint32(h[:4]) & 0x3fffffff),
		byHash: map[[16]byte]int32{},
		idents: map[int32]ident{}, contacts: map[[16]byte]int32{}, origins: map[[16]byte]int32{},
	}
}

// hashOf is the subscriber hash: MD5 of the lower-cased address.
func hashOf(email string) [16]byte {
	return md5.Sum([]byte(strings.ToLower(email)))
}

// contactMask turns an identity hash into a contact_id and back, so that
// the contact_id of a member whose address never changed needs no storage
// and can be looked up through byHash.
var contactMask = md5.Sum([]byte("contact_id"))

func contactID(h [16]byte) [16]byte {
	for i := range h {
		h[i] ^= contactMask[i]
	}
	return h
}

// originOf is the hash member i's unique_email_id and web_id derive from:
// its address's hash, unless its identity is stored.
func (l *list) originOf(i int32) [16]byte {
	if id, ok := l.idents[i]; ok {
		return id.origin
	}
	return hashOf(l.email(&l.members[i]))
}

// contactOf is member i's contact_id, unmasked.
func (l *list) contactOf(i int32) [16]byte {
	if id, ok := l.idents[i]; ok {
		if id.hasContact {
			return id.contact
		}
		return id.origin
	}
	return hashOf(l.email(&l.members[i]))
}

// identTaken reports whether h is the origin or the contact of a member
// with a stored identity, so a member created on that address must not
// derive its identifiers from it.
func (l *list) identTaken(h [16]byte) bool {
	_, o := l.origins[h]
	_, c := l.contacts[h]
	return o || c
}

// setIdent stores member i's identity and indexes it.
func (l *list) setIdent(i int32, id ident) {
	if old, ok := l.idents[i]; ok {
		delete(l.origins, old.origin)
		if old.hasContact {
			delete(l.contacts, old.contact)
		} else {
			delete(l.contacts, old.origin)
		}
	}
	l.idents[i] = id
	l.origins[id.origin] = i
	if id.hasContact {
		l.contacts[id.contact] = i
	} else {
		l.contacts[id.origin] = i
	}
}

// freshIdent derives identifiers for a new member created on an address
// whose hash h is taken by a member with a stored identity. seq makes it
// unique.
func (l *list) freshIdent(h [16]byte) [16]byte {
	for n := 0; ; n++ {
		f := md5.Sum(fmt.Appendf(nil, "fresh:%x:%d:%d", h, len(l.members), n))
		if _, taken := l.byHash[f]; !taken && !l.identTaken(f) {
			return f
		}
	}
}

func (l *list) email(m *member) string {
	return string(l.arena[m.emailOff : m.emailOff+uint32(m.emailLen)])
}

// find returns the member for a path's subscriber_hash, which the API also
// accepts as an email address or a contact_id.
func (l *list) find(key string) (int32, bool) {
	if strings.Contains(key, "@") {
		i, ok := l.byHash[hashOf(key)]
		return i, ok
	}
	b, err := hex.DecodeString(strings.ToLower(key))
	if err != nil || len(b) != 16 {
		return 0, false
	}
	h := [16]byte(b)
	if i, ok := l.byHash[h]; ok {
		return i, true
	}
	// A contact_id: stored for members whose address changed, derived
	// from the address for the others.
	c := contactID(h)
	if i, ok := l.contacts[c]; ok {
		return i, true
	}
	if i, ok := l.byHash[c]; ok {
		if _, stored := l.idents[i]; !stored {
			return i, true
		}
	}
	return 0, false
}

// add appends a new member with its change log entry.
func (l *list) add(email string, st status, lc int64) int32 {
	if len(email) > 0xffff {
		email = email[:0xffff]
	}
	idx := int32(len(l.members))
	l.members = append(l.members, member{emailOff: uint32(len(l.arena)), emailLen: uint16(len(email)), status: st, lastChanged: lc})
	l.arena = append(l.arena, email...)
	h := hashOf(email)
	l.byHash[h] = idx
	if len(l.origins) > 0 && l.identTaken(h) {
		// A member whose address changed still carries the identifiers
		// derived from this address: the new member gets others.
		l.setIdent(idx, ident{origin: l.freshIdent(h)})
	}
	l.insertOrder(idx, lc)
	return idx
}

// emailChangeProblem is the answer to giving member i the address email,
// or nil when the change can be made; it changes nothing.
func (l *list) emailChangeProblem(i int32, email string) *problem {
	email = strings.TrimSpace(email)
	if !validEmail(email) {
		return fakeEmailProblem(email)
	}
	j, taken := l.byHash[hashOf(email)]
	switch {
	case !taken || j == i:
		return nil
	case l.members[j].status == stForgotten:
		return forgottenProblem(email)
	}
	return badRequest("Member Exists", email+" is already a list member. Use PUT to insert or update list members.")
}

// changeEmail gives member i a new address, as PATCH (and PUT) with a new
// email_address do: the subscriber hash becomes the new address's, the old
// hash no longer finds the member, unique_email_id and web_id stay, and
// contact_id stays unless followAddress (Options.ContactIDFollowsAddress).
// The caller checks emailChangeProblem first and moves last_changed. An
// address that differs only in case is not a change (the hash is the same).
func (l *list) changeEmail(i int32, email string, followAddress bool) {
	email = strings.TrimSpace(email)
	m := &l.members[i]
	oldHash, newHash := hashOf(l.email(m)), hashOf(email)
	if oldHash == newHash {
		return
	}
	id, stored := l.idents[i]
	if !stored {
		id = ident{origin: oldHash}
	}
	switch {
	case followAddress:
		c := newHash
		if l.identTaken(c) {
			c = l.freshIdent(newHash)
		}
		id.contact, id.hasContact = c, true
	case !id.hasContact:
		id.contact, id.hasContact = id.origin, true
	}
	old := l.email(m)
	delete(l.byHash, oldHash)
	m.emailOff, m.emailLen = uint32(len(l.arena)), uint16(len(email))
	l.arena = append(l.arena, email...)
	l.byHash[newHash] = i
	l.setIdent(i, id)
	if l.notify != nil {
		l.notify("upemail", i, old)
	}
}

// touch records a change of member i at time now: last_changed moves and
// the member moves to the newest end of the change log.
func (l *list) touch(i int32, now int64) {
	l.members[i].lastChanged = now
	l.dead++
	l.insertOrder(i, now)
	if l.dead > 1024 && l.dead > len(l.order)/2 {
		l.compact()
	}
}

func (l *list) insertOrder(i int32, lc int64) {
	n := len(l.order)
	if n == 0 || l.order[n-1].lc <= lc {
		l.order = append(l.order, orderEntry{idx: i, lc: lc})
		l.members[i].pos = int32(n)
		return
	}
	// Out of order (seeding with explicit times, or a clock that went
	// back): insert and renumber the live entries after it.
	k := sort.Search(n, func(j int) bool { return l.order[j].lc > lc })
	l.order = slices.Insert(l.order, k, orderEntry{idx: i, lc: lc})
	// Walk down so that a member's live entry, once moved, cannot be
	// confused with a dead entry of the same member just below it.
	for j := len(l.order) - 1; j > k; j-- {
		m := &l.members[l.order[j].idx]
		if m.pos == int32(j-1) {
			m.pos = int32(j)
		}
	}
	l.members[i].pos = int32(k)
}

func (l *list) compact() {
	out := l.order[:0]
	for j, e := range l.order {
		if l.members[e.idx].pos == int32(j) {
			l.members[e.idx].pos = int32(len(out))
			out = append(out, e)
		}
	}
	clear(l.order[len(out):])
	l.order = out
	l.dead = 0
}

func (l *list) extraOf(i int32) *extra {
	m := &l.members[i]
	if m.extra == 0 {
		l.extras = append(l.extras, extra{})
		m.extra = int32(len(l.extras))
	}
	return &l.extras[m.extra-1]
}

// setMerge writes the given merge fields onto member i and reports whether
// anything changed. Tags the list does not have are ignored, as the real
// API does (a recorded POST with an unknown tag answered 200 without it).
func (l *list) setMerge(i int32, fields map[string]any) bool {
	changed := false
	for k, v := range fields {
		tag := strings.ToUpper(k)
		if !slices.Contains(l.mergeTags, tag) {
			continue
		}
		s, ok := v.(string)
		if !ok {
			if v == nil {
				s = ""
			} else {
				s = fmt.Sprint(v)
			}
		}
		m := &l.members[i]
		var cur string
		if m.extra != 0 {
			cur = l.extras[m.extra-1].merge[tag]
		}
		if cur == s {
			continue
		}
		x := l.extraOf(i)
		if x.merge == nil {
			x.merge = map[string]string{}
		}
		if s == "" {
			delete(x.merge, tag)
		} else {
			x.merge[tag] = s
		}
		changed = true
	}
	return changed
}

func (l *list) mergeOf(i int32) map[string]any {
	out := make(map[string]any, len(l.mergeTags))
	for _, t := range l.mergeTags {
		out[t] = ""
	}
	if m := &l.members[i]; m.extra != 0 {
		for k, v := range l.extras[m.extra-1].merge {
			out[k] = v
		}
	}
	return out
}

// MemberSeed describes a member to seed.
type MemberSeed struct {
	Email string
	// Status is a Mailchimp status ("subscribed", "unsubscribed",
	// "cleaned", "pending", "transactional", "archived"); "" means subscribed.
	Status string
	// MergeFields are merge tag values (FNAME, LNAME, ...).
	MergeFields map[string]string
	// LastChanged is the member's last_changed; zero means the clock's now.
	LastChanged time.Time
	// TimestampOpt is the member's timestamp_opt; zero means LastChanged.
	TimestampOpt time.Time
	// NoTimestampOpt seeds timestamp_opt "" (a member who never opted in).
	NoTimestampOpt bool
	// UnsubscribedAt is when an unsubscribed member unsubscribed (what
	// unsubscribed_since filters on); zero means LastChanged.
	UnsubscribedAt time.Time
	// Reason is the unsubscribe_reason of an unsubscribed member.
	Reason string
	// Forgotten seeds a permanently deleted address.
	Forgotten bool
}

// Member is a member as the inspection methods return it.
type Member struct {
	ID             string
	Email          string
	ContactID      string
	UniqueEmailID  string
	Status         string
	MergeFields    map[string]string
	LastChanged    time.Time
	UnsubscribedAt time.Time
	TimestampOpt   time.Time
	Forgotten      bool
}

func (l *list) seed(s MemberSeed, now int64) error {
	st := parseStatus(s.Status)
	if s.Status == "" {
		st = stSubscribed
	}
	if s.Forgotten {
		st = stForgotten
	}
	if st == stNone {
		return fmt.Errorf("mailchimptest: member %q: unknown status %q", s.Email, s.Status)
	}
	if !validEmail(s.Email) {
		return fmt.Errorf("mailchimptest: member %q: invalid email address", s.Email)
	}
	lc := now
	if !s.LastChanged.IsZero() {
		lc = s.LastChanged.Unix()
	}
	i, exists := l.byHash[hashOf(s.Email)]
	if exists {
		l.members[i].status = st
		l.touch(i, lc)
	} else {
		i = l.add(s.Email, st, lc)
	}
	m := &l.members[i]
	switch {
	case s.NoTimestampOpt:
		m.optAt = 0
	case !s.TimestampOpt.IsZero():
		m.optAt = s.TimestampOpt.Unix()
	default:
		m.optAt = lc
	}
	if st == stUnsubscribed {
		m.unsubAt = lc
		if !s.UnsubscribedAt.IsZero() {
			m.unsubAt = s.UnsubscribedAt.Unix()
		}
	}
	if len(s.MergeFields) > 0 {
		f := make(map[string]any, len(s.MergeFields))
		for k, v := range s.MergeFields {
			f[k] = v
		}
		l.setMerge(i, f)
	}
	if s.Reason != "" {
		l.extraOf(i).reason = s.Reason
	}
	return nil
}

func (l *list) inspect(i int32) Member {
	m := &l.members[i]
	h := hashOf(l.email(m))
	c := contactID(l.contactOf(i))
	o := l.originOf(i)
	out := Member{
		ID: hex.EncodeToString(h[:]), Email: l.email(m), Status: m.status.String(),
		ContactID: hex.EncodeToString(c[:]), UniqueEmailID: hex.EncodeToString(o[:])[16:26],
		LastChanged: time.Unix(m.lastChanged, 0).UTC(),
		Forgotten:   m.status == stForgotten,
	}
	if m.status == stForgotten {
		out.Status = ""
	}
	if m.unsubAt != 0 {
		out.UnsubscribedAt = time.Unix(m.unsubAt, 0).UTC()
	}
	if m.optAt != 0 {
		out.TimestampOpt = time.Unix(m.optAt, 0).UTC()
	}
	if m.extra != 0 {
		out.MergeFields = maps.Clone(l.extras[m.extra-1].merge)
	}
	return out
}

// validEmail is the emulator's address check: one @, a non-empty local
// part, a dotted domain, no spaces.
func validEmail(s string) bool {
	at := strings.IndexByte(s, '@')
	if at <= 0 || at != strings.LastIndexByte(s, '@') || strings.ContainsAny(s, " \t\r\n,;<>") {
		return false
	}
	dom := s[at+1:]
	dot := strings.LastIndexByte(dom, '.')
	return dot > 0 && dot < len(dom)-2
}
