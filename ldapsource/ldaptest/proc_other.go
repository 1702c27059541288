//go:build !unix

package ldaptest

import "os/exec"

// slapd daemonizes and is stopped with signals: Unix only.
const supported = false

func alive(int) bool        { return false }
func ours(int, string) bool { return false }
func terminate(int) error   { return nil }
func kill(int) error        { return nil }
func detach(*exec.Cmd)      {}
