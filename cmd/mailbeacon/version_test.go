package main

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionFromBuildInfo(t *testing.T) {
	for _, tc := range []struct{ name, info, stamped, want string }{
		{"linker", "path\tx\nmod\tgithub.com/mailbeacon/mailbeacon\tv0.0.0-20261122043856-c2d5895324c7\t\n" +
			"build\tGOARCH=amd64\nbuild\tGOOS=linux\nbuild\tvcs.revision=c2d5895324c7a92894ce4ea1cd534eec5a697c95\nbuild\tvcs.time=2026-11-22T04:38:56Z\nbuild\tvcs.modified=false\n",
			"0.9.0+git20261122.3.c2d5895324c7",
			"mailbeacon 0.9.0+git20261122.3.c2d5895324c7\ncommit c2d5895324c7a92894ce4ea1cd534eec5a697c95 (2026-11-22T04:38:56Z)\ngo1.26.8 linux/amd64\n"},
		{"archive", "path\tx\nmod\tgithub.com/mailbeacon/mailbeacon\t(devel)\t\nbuild\tGOARCH=amd64\nbuild\tGOOS=linux\n", "0.9.0~archive",
			"mailbeacon 0.9.0~archive\ncommit unknown (not built in a git checkout, or with -buildvcs=false)\ngo1.26.8 linux/amd64\n"},
		{"module", "path\tgithub.com/mailbeacon/mailbeacon/cmd/mailbeacon\nmod\tgithub.com/mailbeacon/mailbeacon\tv0.0.0-20261122043856-c2d5895324c7\t\n" +
			"build\tGOARCH=arm64\nbuild\tGOOS=linux\nbuild\tvcs=git\nbuild\tvcs.revision=c2d5895324c7a92894ce4ea1cd534eec5a697c95\nbuild\tvcs.time=2026-11-22T04:38:56Z\nbuild\tvcs.modified=false\n", "",
			"mailbeacon v0.0.0-20261122043856-c2d5895324c7\ncommit c2d5895324c7a92894ce4ea1cd534eec5a697c95 (2026-11-22T04:38:56Z)\ngo1.26.8 linux/arm64\n"},
		{"modified", "path\tx\nmod\tgithub.com/mailbeacon/mailbeacon\tv1.2.3+dirty\t\nbuild\tGOARCH=amd64\nbuild\tGOOS=linux\nbuild\tvcs.revision=abc\nbuild\tvcs.time=T\nbuild\tvcs.modified=true\n", "",
			"mailbeacon v1.2.3+dirty\ncommit abc (T, with uncommitted changes)\ngo1.26.8 linux/amd64\n"},
		{"no vcs", "path\tx\nmod\tgithub.com/mailbeacon/mailbeacon\t(devel)\t\nbuild\tGOARCH=amd64\nbuild\tGOOS=linux\n", "",
			"mailbeacon (devel)\ncommit unknown (not built in a git checkout, or with -buildvcs=false)\ngo1.26.8 linux/amd64\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bi, err := debug.ParseBuildInfo(tc.info)
			if err != nil {
				t.Fatal(err)
			}
			bi.GoVersion = "go1.26.8" // not part of the text form
			var b strings.Builder
			parseBuildInfo(bi, tc.stamped).write(&b)
			if b.String() != tc.want {
				t.Errorf("got\n%s\nwant\n%s", b.String(), tc.want)
			}
		})
	}
}
