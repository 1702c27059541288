package main

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
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
			key, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
			if key == "" || key == "-" || !f.IsExported() {
				continue
			}
			path := strings.TrimPrefix(prefix+"."+key, ".")
			if !regexp.MustCompile(`(?m)^[\s#-]*\{?`+regexp.QuoteMeta(key)+`:`).MatchString(doc) &&
				!strings.Contains(doc, "{"+key+":") && !strings.Contains(doc, " "+key+":") {
				t.Errorf("config key %s is not documented in config.example.yaml", path)
			}
			// The rule language is documented as a list of operators.
			if key != "account_enabled" && key != "services" || prefix != ".policy" {
				walk(prefix+"."+key, f.Type)
			}
		}
	}
	walk("", reflect.TypeOf(config{}))
}
