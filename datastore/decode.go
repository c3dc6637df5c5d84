package datastore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// Document is one decoded YAML/JSON document of a file.
type Document struct {
	Index    int // 1-based position in the file
	Line     int // line the document starts on
	Resource Resource
}

// Where names the document for error messages: `document 2 (line 14)`.
func (d Document) Where() string { return fmt.Sprintf("document %d (line %d)", d.Index, d.Line) }

// DecodeFile decodes every document of a YAML or JSON file (YAML documents
// separated by "---", or a JSON object, or a JSON array of objects), checks
// each strictly (unknown fields, unknown kinds, validation), then checks the
// set as a whole (duplicates, overlapping pools). Either every document is
// returned, or none is and the error lists every problem, one per line,
// each naming the document, the field and the reason.
func DecodeFile(data []byte) ([]Document, error) {
	chunks, err := splitDocuments(data)
	if err != nil {
		return nil, err
	}
	var docs []Document
	var problems []string
	for _, c := range chunks {
		r, err := DecodeStrict(c.json)
		where := fmt.Sprintf("document %d (line %d)", c.index, c.line)
		if err != nil {
			problems = append(problems, prefixLines(where, err))
			continue
		}
		if err := Validate(r); err != nil {
			problems = append(problems, prefixLines(where, err))
			continue
		}
		docs = append(docs, Document{Index: c.index, Line: c.line, Resource: r})
	}
	if len(chunks) == 0 {
		problems = append(problems, "the input holds no documents")
	}
	if len(problems) == 0 {
		if err := validateDocumentSet(docs); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	return docs, nil
}

// prefixLines puts "where: " before every line of err.
func prefixLines(where string, err error) string {
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		lines[i] = where + ": " + l
	}
	return strings.Join(lines, "\n")
}

func validateDocumentSet(docs []Document) error {
	var problems []string
	seen := map[string]Document{}
	var pools []*IPPool
	for _, d := range docs {
		key := string(d.Resource.GetKind()) + "/" + d.Resource.GetMeta().Name
		if prev, dup := seen[key]; dup {
			problems = append(problems, fmt.Sprintf("%s: %s is also defined in %s", d.Where(), Describe(d.Resource), prev.Where()))
		}
		seen[key] = d
		if p, ok := d.Resource.(*IPPool); ok {
			pools = append(pools, p)
		}
	}
	if err := ValidatePools(pools); err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n"))
	}
	return nil
}

// ValidatePools reports every pair of pools whose CIDRs overlap. Pools with
// the same name are the same pool (an update) and are not compared.
func ValidatePools(pools []*IPPool) error {
	type parsed struct {
		name string
		pfx  netip.Prefix
	}
	var ps []parsed
	for _, p := range pools {
		if pfx, err := netip.ParsePrefix(p.Spec.CIDR); err == nil {
			ps = append(ps, parsed{p.Metadata.Name, pfx.Masked()})
		}
	}
	var problems []string
	for i := range ps {
		for j := i + 1; j < len(ps); j++ {
			if ps[i].name != ps[j].name && ps[i].pfx.Overlaps(ps[j].pfx) {
				problems = append(problems, fmt.Sprintf("IPPool %q: spec.cidr: %s overlaps IPPool %q (%s)", ps[j].name, ps[j].pfx, ps[i].name, ps[i].pfx))
			}
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n"))
	}
	return nil
}

type chunk struct {
	index, line int
	json        []byte
}

// splitDocuments cuts a file into JSON documents, remembering where each
// started so that errors can point at it.
func splitDocuments(data []byte) ([]chunk, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var items []json.RawMessage
		if err := json.Unmarshal(trimmed, &items); err != nil {
			return nil, fmt.Errorf("invalid JSON array: %v", err)
		}
		out := make([]chunk, len(items))
		for i, it := range items {
			out[i] = chunk{index: i + 1, line: 1, json: it}
		}
		return out, nil
	}
	var out []chunk
	var problems []string
	lines := strings.SplitAfter(string(data), "\n")
	start, index := 0, 0
	flush := func(end int) {
		text := strings.Join(lines[start:end], "")
		if strings.TrimSpace(stripComments(text)) == "" {
			return
		}
		index++
		j, err := yaml.YAMLToJSON([]byte(text))
		if err != nil {
			problems = append(problems, fmt.Sprintf("document %d (line %d): not valid YAML: %v", index, start+1, err))
			return
		}
		out = append(out, chunk{index: index, line: firstContentLine(lines, start) + 1, json: j})
	}
	for i, l := range lines {
		if t := strings.TrimRight(l, "\r\n \t"); t == "---" || strings.HasPrefix(t, "--- ") {
			flush(i)
			start = i + 1
		}
	}
	flush(len(lines))
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	return out, nil
}

func stripComments(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if t := strings.TrimSpace(l); !strings.HasPrefix(t, "#") {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func firstContentLine(lines []string, start int) int {
	for i := start; i < len(lines); i++ {
		if t := strings.TrimSpace(lines[i]); t != "" && !strings.HasPrefix(t, "#") {
			return i
		}
	}
	return start
}

// DecodeStrict decodes one JSON document into its kind's type, rejecting
// unknown kinds and unknown fields (named by their path), and wrong types.
// It does not validate values; see Validate.
func DecodeStrict(data []byte) (Resource, error) {
	var raw map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("not a JSON/YAML object: %v", err)
	}
	var tm TypeMeta
	if s, ok := raw["apiVersion"].(string); ok {
		tm.APIVersion = s
	}
	kindStr, _ := raw["kind"].(string)
	if kindStr == "" {
		return nil, errors.New("kind: is required")
	}
	if tm.APIVersion == "" {
		return nil, errors.New("apiVersion: is required (calyx.dev/v1)")
	}
	kind, err := ParseKind(kindStr)
	if err != nil || string(kind) != kindStr {
		return nil, fmt.Errorf("kind: unknown kind %q (known kinds: %s)", kindStr, kindList())
	}
	r, _ := NewResource(kind)
	if problems := unknownFields(raw, reflect.TypeOf(r).Elem(), ""); len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	if err := json.Unmarshal(data, r); err != nil {
		return nil, describeJSONError(err)
	}
	return r, nil
}

func kindList() string {
	names := make([]string, len(Kinds))
	for i, k := range Kinds {
		names[i] = string(k)
	}
	return strings.Join(names, ", ")
}

// describeJSONError turns encoding/json's messages into "field: reason".
func describeJSONError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "(document)"
		}
		if te.Value == "number" || strings.HasPrefix(te.Value, "number ") {
			switch te.Type.Kind() {
			case reflect.Uint32, reflect.Uint16, reflect.Uint8, reflect.Int, reflect.Int64, reflect.Uint64:
				return fmt.Errorf("%s: %s is out of range or not a whole number for this field", field, strings.TrimPrefix(te.Value, "number "))
			}
		}
		return fmt.Errorf("%s: expected %s, got %s", field, jsonTypeName(te.Type), te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("invalid JSON at offset %d: %v", se.Offset, err)
	}
	// Errors from our own UnmarshalJSON methods (ports, protocols) do not
	// carry the field; encoding/json wraps them as they are.
	return err
}

func jsonTypeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Uint32, reflect.Uint16, reflect.Uint8, reflect.Float64:
		return "a number"
	case reflect.Slice:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Pointer:
		return jsonTypeName(t.Elem())
	}
	return t.String()
}

var (
	jsonUnmarshalerType = reflect.TypeOf((*json.Unmarshaler)(nil)).Elem()
)

// unknownFields walks a decoded JSON value beside the Go type it will be
// decoded into and names every key the type does not have.
func unknownFields(v any, t reflect.Type, path string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshalerType) {
		return nil // the type checks its own syntax
	}
	switch val := v.(type) {
	case map[string]any:
		switch t.Kind() {
		case reflect.Map:
			var out []string
			for _, k := range sortedKeys(val) {
				out = append(out, unknownFields(val[k], t.Elem(), joinPath(path, k))...)
			}
			return out
		case reflect.Struct:
			fields := jsonFields(t)
			var out []string
			for _, k := range sortedKeys(val) {
				ft, ok := fields[k]
				if !ok {
					out = append(out, fmt.Sprintf("%s: unknown field%s", joinPath(path, k), suggest(k, fields)))
					continue
				}
				out = append(out, unknownFields(val[k], ft, joinPath(path, k))...)
			}
			return out
		}
	case []any:
		if t.Kind() == reflect.Slice {
			var out []string
			for i, e := range val {
				out = append(out, unknownFields(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
			}
			return out
		}
	}
	return nil // type mismatches are reported by json.Unmarshal
}

func joinPath(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// jsonFields maps JSON names to field types, following inline embedding.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			for k, v := range jsonFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// suggest proposes a known field whose name differs only in case, the most
// common typo ("CIDR" for "cidr").
func suggest(k string, fields map[string]reflect.Type) string {
	for name := range fields {
		if strings.EqualFold(name, k) {
			return fmt.Sprintf(" (did you mean %q?)", name)
		}
	}
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	sort.Strings(names)
	return fmt.Sprintf(" (known fields: %s)", strings.Join(names, ", "))
}

// Decode reads a resource stored in etcd. It is lenient with unknown fields
// so that an older agent can read what a newer calyxctl wrote.
func Decode(kind Kind, data []byte) (Resource, error) {
	r, err := NewResource(kind)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, r); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", kind, err)
	}
	return r, nil
}

// Encode writes a resource as stored in etcd (JSON, without the
// resourceVersion, which etcd itself tracks).
func Encode(r Resource) ([]byte, error) {
	m := r.GetMeta()
	rv := m.ResourceVersion
	m.ResourceVersion = ""
	defer func() { m.ResourceVersion = rv }()
	return json.Marshal(r)
}

// EncodeYAML writes resources as a multi-document YAML file that DecodeFile
// reads back as it is.
func EncodeYAML(rs []Resource) ([]byte, error) {
	var b bytes.Buffer
	for i, r := range rs {
		if i > 0 {
			b.WriteString("---\n")
		}
		y, err := yaml.Marshal(r)
		if err != nil {
			return nil, err
		}
		b.Write(y)
	}
	return b.Bytes(), nil
}
