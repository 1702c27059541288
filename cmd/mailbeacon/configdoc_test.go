package main

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/policy"
)

// Every configuration key must be documented in config.example.yaml, set
// or commented out.
func TestConfigExampleDocumentsEveryKey(t *testing.T) {
	b, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Map {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || typ == reflect.TypeOf(time.Duration(0)) {
			return
		}
		for i := range typ.NumField() {
			f := typ.Field(i)
			key, opts, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
			if opts == "squash" {
				walk(prefix, f.Type) // its keys sit beside the others'
				continue
			}
			if key == "" || key == "-" || !f.IsExported() {
				continue
			}
			path := strings.TrimPrefix(prefix+"."+key, ".")
			if !regexp.MustCompile(`(?m)^[\s#-]*\{?`+regexp.QuoteMeta(key)+`:`).MatchString(doc) &&
				!strings.Contains(doc, "{"+key+":") && !strings.Contains(doc, " "+key+":") {
				t.Errorf("config key %s is not documented in config.example.yaml", path)
			}
			// The rule language is documented as a list of operators.
			if !isRule(f.Type) {
				walk(prefix+"."+key, f.Type)
			}
		}
	}
	walk("", reflect.TypeOf(config{}))
}

// isRule reports whether typ is a rule, or a pointer, list or map of them.
func isRule(typ reflect.Type) bool {
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Map {
		typ = typ.Elem()
	}
	return typ == reflect.TypeOf(policy.Rule{})
}
