package mailchimptest

import "strings"

// fieldTree is a set of dot-notation paths ("members.email_address") as a
// tree; a node with no children selects the whole value under it.
type fieldTree map[string]fieldTree

func parseFields(csv string) fieldTree {
	t := fieldTree{}
	for p := range strings.SplitSeq(csv, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		node := t
		parts := strings.Split(p, ".")
		for i, part := range parts {
			if i == len(parts)-1 {
				node[part] = nil // the whole value, even if a subtree was asked before
				break
			}
			child, ok := node[part]
			if ok && child == nil {
				break // already selected whole
			}
			if !ok {
				child = fieldTree{}
				node[part] = child
			}
			node = child
		}
	}
	return t
}

// include keeps only the selected paths. Arrays are walked element by
// element, which is how "members.status" selects a field of every member.
//
// UNCONFIRMED: the docs say an invalid field name is an error; which names
// the real API rejects is not documented, so unknown names select nothing.
func include(v any, t fieldTree) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, sub := range t {
			val, ok := x[k]
			if !ok {
				continue
			}
			if sub == nil {
				out[k] = val
			} else {
				out[k] = include(val, sub)
			}
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = include(e, t)
		}
		return out
	default:
		return v
	}
}

// exclude drops the selected paths.
func exclude(v any, t fieldTree) any {
	switch x := v.(type) {
	case map[string]any:
		for k, sub := range t {
			val, ok := x[k]
			if !ok {
				continue
			}
			if sub == nil {
				delete(x, k)
			} else {
				x[k] = exclude(val, sub)
			}
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = exclude(e, t)
		}
		return x
	default:
		return v
	}
}
