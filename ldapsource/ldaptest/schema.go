package ldaptest

import (
	"embed"
	"fmt"
)

// The vendors' mail schemas, written for these tests from the attribute
// names and OIDs the vendors publish (names and OIDs are facts; the
// definitions here carry only what the tests need).
//
//go:embed schema/*.schema
var vendorSchemas embed.FS

// Schema returns the test schema of a mail stack by name (the file
// schema/NAME.schema), for WithSchema. It panics on an unknown name: a
// test that names a schema the package lacks is wrong.
func Schema(name string) string {
	b, err := vendorSchemas.ReadFile("schema/" + name + ".schema")
	if err != nil {
		panic(fmt.Sprintf("ldaptest: no test schema %q: %v", name, err))
	}
	return string(b)
}
