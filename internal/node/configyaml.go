package node

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// yamlError rewrites a decoding error of the configuration file src as one
// line that names each offending key by its full path ("batching.delay",
// "local[0].listen"): yaml.v3 reports type errors as a multi-line list
// that names the Go type instead of the key, which an operator does not
// know. Other errors (syntax errors are one line already) pass unchanged.
func yamlError(src []byte, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	var root yaml.Node
	if yaml.Unmarshal(src, &root) != nil {
		return errors.New(strings.Join(te.Errors, "; "))
	}
	var places []yamlPlace
	walkYAML(&root, "", &places)
	msgs := make([]string, len(te.Errors))
	for i, e := range te.Errors {
		msgs[i] = describeYAMLError(e, places)
	}
	return errors.New(strings.Join(msgs, "; "))
}

// yamlPlace is a key or a value of the file, with the dotted path of the
// key it belongs to.
type yamlPlace struct {
	line  int
	key   bool
	kind  yaml.Kind
	value string
	path  string
}

// walkYAML appends every key and value under n to places.
func walkYAML(n *yaml.Node, path string, places *[]yamlPlace) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			walkYAML(c, path, places)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			*places = append(*places,
				yamlPlace{line: k.Line, key: true, value: k.Value, path: p},
				yamlPlace{line: v.Line, kind: v.Kind, value: v.Value, path: p})
			walkYAML(v, p, places)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			*places = append(*places, yamlPlace{line: c.Line, kind: c.Kind, value: c.Value, path: p})
			walkYAML(c, p, places)
		}
	}
}

// The two kinds of yaml.v3 type errors a configuration file produces.
var (
	yamlUnknownKey = regexp.MustCompile("^line ([0-9]+): field (.*) not found in type .*$")
	yamlBadValue   = regexp.MustCompile("^line ([0-9]+): cannot unmarshal !!([a-z]+)(?: `(.*)`)? into (.*)$")
)

// describeYAMLError rewrites one entry of a yaml.TypeError; an entry it
// cannot place is returned as yaml.v3 wrote it.
func describeYAMLError(e string, places []yamlPlace) string {
	if m := yamlUnknownKey.FindStringSubmatch(e); m != nil {
		for _, p := range places {
			if p.key && fmt.Sprint(p.line) == m[1] && p.value == m[2] {
				return fmt.Sprintf("line %s: unknown key %s", m[1], p.path)
			}
		}
		return fmt.Sprintf("line %s: unknown key %s", m[1], m[2])
	}
	m := yamlBadValue.FindStringSubmatch(e)
	if m == nil {
		return e
	}
	line, tag, value, goType := m[1], m[2], m[3], m[4]
	path := ""
	for _, p := range places {
		if !p.key && fmt.Sprint(p.line) == line && yamlValueMatches(p, tag, value) {
			path = p.path
			break
		}
	}
	if path == "" {
		return e
	}
	got := "`" + value + "`"
	switch tag {
	case "seq":
		got = "a list"
	case "map":
		got = "a mapping"
	}
	if strings.HasSuffix(goType, "time.Duration") {
		return fmt.Sprintf("line %s: %s: %s is not a duration; want a number with a unit, such as 500ms or 2m",
			line, path, got)
	}
	return fmt.Sprintf("line %s: %s: want %s, not %s", line, path, yamlWant(goType), got)
}

// yamlValueMatches reports whether p is the value a type error quotes:
// yaml.v3 shortens long values to a prefix and "...", and quotes no value
// of a list or mapping.
func yamlValueMatches(p yamlPlace, tag, value string) bool {
	switch {
	case tag == "seq":
		return p.kind == yaml.SequenceNode
	case tag == "map":
		return p.kind == yaml.MappingNode
	case p.kind != yaml.ScalarNode:
		return false
	case p.value == value:
		return true
	}
	prefix, cut := strings.CutSuffix(value, "...")
	return cut && strings.HasPrefix(p.value, prefix)
}

// yamlWant names what a Go type of the configuration takes.
func yamlWant(goType string) string {
	goType = strings.TrimPrefix(goType, "*")
	switch {
	case goType == "string":
		return "a string"
	case goType == "bool":
		return "true or false"
	case strings.HasPrefix(goType, "int") || strings.HasPrefix(goType, "uint"):
		return "a whole number"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	default:
		return "a mapping of keys"
	}
}
