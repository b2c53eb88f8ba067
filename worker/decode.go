package main

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"gopkg.in/yaml.v3"
)

// decodeStrict decodes a YAML node into the struct v points at, key by
// key: an unknown or repeated key, or a value of the wrong type, is a
// problem named by its key under path ("crm.concurrency"), in words
// rather than Go types. skip lists keys the caller reads itself ("kind").
// Struct fields embedded with `yaml:",inline"` are keys of the same block.
func decodeStrict(n *yaml.Node, v any, path string, skip ...string) []string {
	var p []string
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null") {
		return nil // an empty block: defaults apply
	}
	if n.Kind != yaml.MappingNode {
		return []string{keyed(path, "expected a block of keys, found "+describeNode(n))}
	}
	fields := map[string]reflect.Value{}
	collectFields(reflect.ValueOf(v).Elem(), fields)
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := k.Value
		if k.Kind != yaml.ScalarNode {
			key = "(a key that is not text)"
		}
		at := join(path, key)
		if path == "" && (k.Kind != yaml.ScalarNode || keyText(key) != key) {
			at = "configuration." + keyText(key)
		}
		if seen[key] {
			p = append(p, keyed(at, "given twice"))
			continue
		}
		seen[key] = true
		if slices.Contains(skip, key) {
			continue
		}
		f, ok := fields[key]
		if !ok {
			p = append(p, keyed(at, "unknown key (known: "+strings.Join(sortedKeys(fields), ", ")+")"))
			continue
		}
		p = append(p, decodeValue(val, f, at)...)
	}
	return p
}

// collectFields maps each YAML key of the struct rv to its field.
func collectFields(rv reflect.Value, out map[string]reflect.Value) {
	t := rv.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		tag := sf.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		switch {
		case opts == "inline":
			collectFields(rv.Field(i), out)
		case name != "" && name != "-" && sf.IsExported():
			out[name] = rv.Field(i)
		}
	}
}

// decodeValue decodes one value into f.
func decodeValue(n *yaml.Node, f reflect.Value, at string) []string {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return nil
	}
	if f.Type() == reflect.TypeFor[yaml.Node]() {
		f.Set(reflect.ValueOf(*n))
		return nil
	}
	switch f.Kind() {
	case reflect.Pointer:
		// An optional value whose default is not the zero value: nil when absent.
		v := reflect.New(f.Type().Elem())
		if p := decodeValue(n, v.Elem(), at); len(p) > 0 {
			return p
		}
		f.Set(v)
		return nil
	case reflect.Struct:
		return decodeStrict(n, f.Addr().Interface(), at)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return []string{keyed(at, "expected a list, found "+describeNode(n))}
		}
		var p []string
		s := reflect.MakeSlice(f.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			p = append(p, decodeValue(item, s.Index(i), fmt.Sprintf("%s[%d]", at, i))...)
		}
		f.Set(s)
		return p
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return []string{keyed(at, "expected a block of keys, found "+describeNode(n))}
		}
		var p []string
		m := reflect.MakeMap(f.Type())
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			if m.MapIndex(reflect.ValueOf(k)).IsValid() {
				p = append(p, keyed(join(at, k), "given twice"))
				continue
			}
			ev := reflect.New(f.Type().Elem()).Elem()
			if q := decodeValue(n.Content[i+1], ev, join(at, k)); len(q) > 0 {
				p = append(p, q...)
				continue
			}
			m.SetMapIndex(reflect.ValueOf(k), ev)
		}
		f.Set(m)
		return p
	}
	if n.Kind != yaml.ScalarNode {
		return []string{keyed(at, "expected "+want(f.Kind())+", found "+describeNode(n))}
	}
	switch f.Kind() {
	case reflect.String:
		// Text keys take the scalar as written: an account id 1234567 or
		// a schedule 15 is what the user typed, whatever YAML would
		// resolve it to; the key's own rules then judge it.
		f.SetString(n.Value)
		return nil
	case reflect.Bool, reflect.Int:
		tmp := reflect.New(f.Type())
		if err := n.Decode(tmp.Interface()); err != nil || (f.Kind() == reflect.Int && n.ShortTag() != "!!int") {
			return []string{keyed(at, fmt.Sprintf("expected %s, found %s", want(f.Kind()), describeNode(n)))}
		}
		f.Set(tmp.Elem())
		return nil
	}
	return []string{keyed(at, "cannot be set from YAML")}
}

func want(k reflect.Kind) string {
	switch k {
	case reflect.Bool:
		return "true or false"
	case reflect.Int:
		return "a whole number"
	case reflect.String:
		return "text"
	}
	return "a value"
}

// describe names what a node is, without repeating a long value.
func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a block of keys"
	case yaml.SequenceNode:
		return "a list"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:40] + "…"
	}
	switch n.ShortTag() {
	case "!!int", "!!float":
		return "the number " + v
	case "!!bool":
		return "the boolean " + v
	}
	return fmt.Sprintf("%q", v)
}

// join appends key to path, quoting a key that is empty or holds a
// control character, so that one problem stays one line.
func join(path, key string) string {
	key = keyText(key)
	if path == "" {
		return key
	}
	return path + "." + key
}

// keyText is key as a problem names it.
func keyText(key string) string {
	if key == "" || strings.IndexFunc(key, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return strconv.Quote(key)
	}
	return key
}

// keyed is a problem line; the top level is "configuration".
func keyed(path, msg string) string {
	if path == "" {
		path = "configuration"
	}
	return path + ": " + msg
}

// maxExpanded bounds the values a configuration holds once its aliases
// are expanded: a few kilobytes of aliases of aliases can stand for
// billions of values.
const maxExpanded = 100_000

// expandedSize counts the nodes of n with aliases followed, stopping
// once the count passes limit.
func expandedSize(n *yaml.Node, limit int) int {
	count := 0
	var walk func(*yaml.Node, int)
	walk = func(n *yaml.Node, depth int) {
		if n == nil || count > limit || depth > 10_000 {
			count = limit + 1
			return
		}
		count++
		if n.Kind == yaml.AliasNode {
			walk(n.Alias, depth+1)
			return
		}
		for _, c := range n.Content {
			walk(c, depth+1)
		}
	}
	walk(n, 0)
	return count
}
