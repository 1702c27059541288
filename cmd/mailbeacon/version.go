package main

import (
	"fmt"
	"io"
	"runtime/debug"
)

// The version, commit and Go release come from the build information the
// Go toolchain embeds (go build stamps the module version and the VCS
// revision when it builds in a git checkout), so no linker flag can
// disagree with the source.

// buildInfo is what `mailbeacon version` prints.
type buildInfo struct {
	version  string // module version; "(devel)" outside a tagged or stamped build
	commit   string // vcs.revision; empty when not built in a checkout
	time     string // vcs.time
	modified bool   // vcs.modified: uncommitted changes were built
	goVer    string
	platform string
}

func readBuildInfo() buildInfo {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return buildInfo{version: "(devel)"}
	}
	return parseBuildInfo(bi)
}

func parseBuildInfo(bi *debug.BuildInfo) buildInfo {
	b := buildInfo{version: bi.Main.Version, goVer: bi.GoVersion}
	if b.version == "" {
		b.version = "(devel)"
	}
	var goos, goarch string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.commit = s.Value
		case "vcs.time":
			b.time = s.Value
		case "vcs.modified":
			b.modified = s.Value == "true"
		case "GOOS":
			goos = s.Value
		case "GOARCH":
			goarch = s.Value
		}
	}
	if goos != "" {
		b.platform = goos + "/" + goarch
	}
	return b
}

func versionString() string { return readBuildInfo().version }

func (b buildInfo) write(w io.Writer) {
	fmt.Fprintln(w, "mailbeacon", b.version)
	switch {
	case b.commit == "":
		fmt.Fprintln(w, "commit unknown (not built in a git checkout, or with -buildvcs=false)")
	case b.modified:
		fmt.Fprintf(w, "commit %s (%s, with uncommitted changes)\n", b.commit, b.time)
	default:
		fmt.Fprintf(w, "commit %s (%s)\n", b.commit, b.time)
	}
	fmt.Fprintln(w, b.goVer, b.platform)
}
