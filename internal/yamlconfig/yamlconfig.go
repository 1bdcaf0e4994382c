// Package yamlconfig reads healer's YAML configuration files into their Go
// structs: strictly (an unknown key is an error, so a misspelt setting is
// never silently ignored), with durations written the way people write
// them ("30s", "10m") wherever the struct has a time.Duration.
package yamlconfig

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Load reads the YAML file at path into dst, a pointer to a struct.
func Load(path string, dst any) error {
	b, err := os.ReadFile(path) //nolint:gosec // the operator names the file
	if err != nil {
		return fmt.Errorf("read config %s: %w", path, err)
	}
	var doc any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("parse config %s: %w", path, err)
	}
	doc, err = durationsToNanos(doc, reflect.TypeOf(dst), "")
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// durationsToNanos rewrites duration strings ("30s", "10m") in a decoded
// YAML document to the nanoseconds encoding/json expects for the
// time.Duration fields of t, so the file reads the way people write it.
func durationsToNanos(v any, t reflect.Type, path string) (any, error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeFor[time.Duration]() {
		if s, ok := v.(string); ok {
			d, err := time.ParseDuration(s)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			return int64(d), nil
		}
		return v, nil
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return v, nil
		}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" && f.Anonymous {
				// An embedded struct's fields sit in the same object.
				if _, err := durationsToNanos(m, f.Type, path); err != nil {
					return nil, err
				}
				continue
			}
			if name == "" || name == "-" {
				continue
			}
			if fv, ok := m[name]; ok {
				nv, err := durationsToNanos(fv, f.Type, strings.TrimPrefix(path+"."+name, "."))
				if err != nil {
					return nil, err
				}
				m[name] = nv
			}
		}
	case reflect.Slice:
		list, ok := v.([]any)
		if !ok {
			return v, nil
		}
		for i := range list {
			nv, err := durationsToNanos(list[i], t.Elem(), fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			list[i] = nv
		}
	}
	return v, nil
}
