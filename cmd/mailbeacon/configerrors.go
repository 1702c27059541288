package main

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/go-viper/mapstructure/v2"
)

// decodeErrors turns what the decoder reports (`'cache.ttl' time: unknown
// unit`: the key quoted, the value lost) into one line per key that names
// the key, the value given and how to write it. settings are the values
// read (viper's AllSettings), where the value is looked up.
func decodeErrors(err error, settings map[string]any) error {
	var des []*mapstructure.DecodeError
	collectDecodeErrors(err, &des)
	if len(des) == 0 {
		return err
	}
	var lines []string
	for _, de := range des {
		lines = append(lines, describeDecodeError(de, settings))
	}
	sort.Strings(lines)
	return errors.New(strings.Join(lines, "\n"))
}

// collectDecodeErrors gathers the DecodeErrors of err's tree (the decoder
// joins one per key).
func collectDecodeErrors(err error, out *[]*mapstructure.DecodeError) {
	if de, ok := err.(*mapstructure.DecodeError); ok {
		*out = append(*out, de)
		return
	}
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			collectDecodeErrors(e, out)
		}
	case interface{ Unwrap() error }:
		if e := u.Unwrap(); e != nil {
			collectDecodeErrors(e, out)
		}
	}
}

func describeDecodeError(de *mapstructure.DecodeError, settings map[string]any) string {
	key, inner := de.Name(), de.Unwrap()
	if names, ok := strings.CutPrefix(inner.Error(), "has invalid keys: "); ok {
		var out []string
		for _, n := range strings.Split(names, ", ") {
			full := n
			if key != "" {
				full = key + "." + n
			}
			out = append(out, full+": unknown key: check its spelling and section (every key is documented in config.example.yaml)")
		}
		return strings.Join(out, "\n")
	}
	value, found := lookupSetting(settings, key)
	var pe *mapstructure.ParseError
	var ue *mapstructure.UnconvertibleTypeError
	switch {
	case errors.As(inner, &pe):
		if !found {
			value = pe.Value
		}
		return fmt.Sprintf("%s: %s %s", key, quoteValue(value), kindFix(pe.Expected.Type()))
	case errors.As(inner, &ue):
		if !found {
			value = ue.Value
		}
		return fmt.Sprintf("%s: %s %s", key, quoteValue(value), kindFix(ue.Expected.Type()))
	case strings.HasPrefix(inner.Error(), "time: "):
		return fmt.Sprintf("%s: %s is not a duration: write e.g. 10m or 1h30m (units ms, s, m, h)", key, quoteValue(value))
	}
	return fmt.Sprintf("%s: %s cannot be used: %v (config.example.yaml documents the key)", key, quoteValue(value), inner)
}

// kindFix says what a value of type t looks like.
func kindFix(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "is not true or false: write true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if t.String() == "time.Duration" {
			return "is not a duration: write e.g. 10m or 1h30m (units ms, s, m, h)"
		}
		return "is not a whole number: write digits only, e.g. 8"
	case reflect.Float32, reflect.Float64:
		return "is not a number: write e.g. 0.5"
	case reflect.Slice, reflect.Array:
		return "is not a list: write e.g. [a, b], or one item per line starting with -"
	case reflect.Map, reflect.Struct:
		return "is not a section of keys: write key: value lines indented under it"
	case reflect.String:
		return "is not text: quote it"
	}
	return "is not a " + t.String()
}

// quoteValue prints a value read from the file as it was given.
func quoteValue(v any) string {
	switch v := v.(type) {
	case nil:
		return "(no value)"
	case string:
		return strconv.Quote(v)
	}
	return fmt.Sprintf("%v", v)
}

// lookupSetting finds key (dotted, with [i] for list items, as the decoder
// names them) in viper's settings.
func lookupSetting(settings map[string]any, key string) (any, bool) {
	var cur any = settings
	for _, part := range strings.Split(key, ".") {
		name, rest, _ := strings.Cut(part, "[")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[strings.ToLower(name)]; !ok {
			return nil, false
		}
		for rest != "" {
			idx, after, _ := strings.Cut(rest, "]")
			i, err := strconv.Atoi(idx)
			list, ok := cur.([]any)
			if err != nil || !ok || i < 0 || i >= len(list) {
				return nil, false
			}
			cur = list[i]
			rest = strings.TrimPrefix(after, "[")
		}
	}
	return cur, true
}
