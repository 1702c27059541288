package ldaptest

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// WithSuffix adds a second naming context, a database of its own with the
// suffix dn (such as Zimbra's cn=zimbra, which holds the classes of
// service outside any domain's tree). The service account may read it;
// LDIF records under it (WithLDIF, WithExtraLDIF) are loaded into it.
func WithSuffix(dn string) Option {
	return func(o *options) { o.suffixes = append(o.suffixes, dn) }
}

// suffixDatabases is the slapd.conf text of the databases of suffixes,
// each in its own directory under dir.
func suffixDatabases(dir string, suffixes []string) (string, error) {
	var b strings.Builder
	for i, sfx := range suffixes {
		db := filepath.Join(dir, fmt.Sprintf("db-suffix%d", i))
		if err := os.Mkdir(db, 0o700); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "\ndatabase mdb\nmaxsize 104857600\nsuffix %q\ndirectory %q\n"+
			"access to *\n    by dn.exact=%q read\n    by * none\n", sfx, db, ServiceDN)
	}
	return b.String(), nil
}

// splitLDIF sorts the records of ldif by the suffix their DN lies under:
// the first result holds those of none of suffixes (the main database),
// the second those of each suffix, in the order of suffixes.
func splitLDIF(ldif string, suffixes []string) (string, []string) {
	if len(suffixes) == 0 {
		return ldif, nil
	}
	var main []string
	per := make([][]string, len(suffixes))
	for _, rec := range splitRecords(ldif) {
		dn := strings.ToLower(recordDN(rec))
		placed := false
		for i, sfx := range suffixes {
			s := strings.ToLower(sfx)
			if dn == s || strings.HasSuffix(dn, ","+s) {
				per[i] = append(per[i], rec)
				placed = true
				break
			}
		}
		if !placed {
			main = append(main, rec)
		}
	}
	out := make([]string, len(suffixes))
	for i, recs := range per {
		out[i] = strings.Join(recs, "\n\n")
	}
	return strings.Join(main, "\n\n"), out
}

// splitRecords returns the records of ldif, which blank lines separate.
func splitRecords(ldif string) []string {
	var out []string
	for _, rec := range strings.Split(strings.ReplaceAll(ldif, "\r\n", "\n"), "\n\n") {
		if strings.TrimSpace(rec) != "" {
			out = append(out, rec)
		}
	}
	return out
}

// recordDN returns the DN of an LDIF record: its dn: line with the lines
// that continue it, base64-decoded after "dn::".
func recordDN(rec string) string {
	lines := strings.Split(rec, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(strings.ToLower(l), "dn:") {
			continue
		}
		v := l[3:]
		for _, c := range lines[i+1:] {
			if !strings.HasPrefix(c, " ") {
				break
			}
			v += c[1:]
		}
		if strings.HasPrefix(v, ":") {
			d, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v[1:]))
			if err != nil {
				return ""
			}
			return strings.TrimSpace(string(d))
		}
		return strings.TrimSpace(v)
	}
	return ""
}
