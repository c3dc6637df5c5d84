package datastore

import (
	"fmt"
	"reflect"
	"strings"
)

// Redacted stands for a secret in what calyxctl prints. Written back (a
// `get -o yaml | apply -f -` round trip) it means "keep the stored value";
// it is never stored itself.
const Redacted = "<redacted>"

// A spec field holding a secret (a BGP password) carries the struct tag
// `secret:"true"`; everything below finds them by that tag, so a new secret
// field is covered by tagging it.

// secretField is one tagged string field, by its JSON path.
type secretField struct {
	path  string
	value reflect.Value // settable string
}

func secretFields(r Resource) []secretField {
	var out []secretField
	walkSecrets(reflect.ValueOf(r).Elem(), "", &out)
	return out
}

func walkSecrets(v reflect.Value, path string, out *[]secretField) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			walkSecrets(v.Elem(), path, out)
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			walkSecrets(v.Index(i), fmt.Sprintf("%s[%d]", path, i), out)
		}
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			p := path
			if name != "" && !f.Anonymous {
				p = joinPath(path, name)
			}
			if f.Tag.Get("secret") == "true" && f.Type.Kind() == reflect.String {
				*out = append(*out, secretField{path: p, value: v.Field(i)})
				continue
			}
			walkSecrets(v.Field(i), p, out)
		}
	}
}

// Redact returns a copy of r with every set secret replaced by Redacted
// (r itself is not changed).
func Redact(r Resource) (Resource, error) {
	fields := secretFields(r)
	if len(fields) == 0 {
		return r, nil
	}
	data, err := Encode(r)
	if err != nil {
		return nil, err
	}
	c, err := Decode(r.GetKind(), data)
	if err != nil {
		return nil, err
	}
	c.GetMeta().ResourceVersion = r.GetMeta().ResourceVersion
	for _, f := range secretFields(c) {
		if f.value.String() != "" {
			f.value.SetString(Redacted)
		}
	}
	return c, nil
}

// redactedFields lists the paths of r's secrets that hold Redacted.
func redactedFields(r Resource) []string {
	var out []string
	for _, f := range secretFields(r) {
		if f.value.String() == Redacted {
			out = append(out, f.path)
		}
	}
	return out
}

// keepRedacted puts the stored value back into every secret of r that holds
// Redacted. stored is nil when nothing is stored under r's name.
func keepRedacted(r, stored Resource) error {
	want := map[string]string{}
	if stored != nil {
		for _, f := range secretFields(stored) {
			want[f.path] = f.value.String()
		}
	}
	for _, f := range secretFields(r) {
		if f.value.String() != Redacted {
			continue
		}
		v, ok := want[f.path]
		if !ok || v == "" {
			return fmt.Errorf("%s: %s is %q, which keeps the stored secret, but none is stored: give the value itself", Describe(r), f.path, Redacted)
		}
		f.value.SetString(v)
	}
	return nil
}
