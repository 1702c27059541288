package main

import (
	"fmt"
	"io"
	"runtime/debug"
)

// The commit and Go release come from the build information the Go
// toolchain embeds (go build stamps the VCS revision when it builds in a git
// checkout). The version is the one deploy/version derives from the VERSION
// file and the commit, stamped by the Makefile with -ldflags -X
// main.version=..., so that the binary, the .deb and the image name the same
// version, one that dpkg sorts; a plain go build falls back to the module
// version the build information holds.

// version is set by the linker (make build, dist, deb, image).
var version string

// buildInfo is what `mailbeacon version` prints.
type buildInfo struct {
	version  string // stamped version, else the module version; "(devel)" for a plain go build
	commit   string // vcs.revision; empty when not built in a checkout
	time     string // vcs.time
	modified bool   // vcs.modified: uncommitted changes were built
	goVer    string
	platform string
}

func readBuildInfo() buildInfo {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = &debug.BuildInfo{}
	}
	return parseBuildInfo(bi, version)
}

// parseBuildInfo reads bi; stamped, when not empty, is the version the
// linker set, which wins over the module version.
func parseBuildInfo(bi *debug.BuildInfo, stamped string) buildInfo {
	b := buildInfo{version: bi.Main.Version, goVer: bi.GoVersion}
	if stamped != "" {
		b.version = stamped
	}
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
