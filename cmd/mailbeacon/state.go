package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/protocols"
)

// packagedStateDir is the shipped unit's StateDirectory=, used when it
// exists, so that `config check --online` run by an administrator shares
// the service's memory of refused credentials.
const packagedStateDir = "/var/lib/mailbeacon"

// stateDir returns the directory state_dir names, or its default:
// $STATE_DIRECTORY (systemd's StateDirectory=), else /var/lib/mailbeacon
// if it exists, else none. explicit reports whether state_dir named it.
func stateDir(cfg config) (dir string, explicit bool) {
	switch {
	case cfg.noState:
		return "", false
	case cfg.StateDir != "":
		return cfg.StateDir, true
	}
	if env := os.Getenv("STATE_DIRECTORY"); env != "" {
		// systemd lists one directory per StateDirectory= entry.
		first, _, _ := strings.Cut(env, ":")
		return first, false
	}
	if fi, err := os.Stat(packagedStateDir); err == nil && fi.IsDir() {
		return packagedStateDir, false
	}
	return "", false
}

// openState opens the record of refused service-account credentials in
// the state directory. A state_dir that cannot be used is a configuration
// error; a default one falls back to memory, with a warning.
func openState(cfg config, log *slog.Logger) (*ldapsource.Refusals, error) {
	dir, explicit := stateDir(cfg)
	if dir == "" {
		return ldapsource.NewRefusals(), nil
	}
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("state_dir: %q is not an absolute path, e.g. /var/lib/mailbeacon", dir)
	}
	r, err := ldapsource.OpenRefusals(dir)
	if err == nil {
		return r, nil
	}
	if explicit {
		return nil, fmt.Errorf("state_dir: %w (the service's user must be able to write it)", err)
	}
	if log != nil {
		log.Warn("the default state directory cannot be used: refused service-account credentials are remembered until the process exits; set state_dir",
			"dir", dir, "err", err)
	}
	return ldapsource.NewRefusals(), nil
}

// ready is /readyz's check: the directory answers. A service account held
// back because the directory refused its credentials or locked it out is
// said in the body, with the key to fix (no host names, no DNs).
func (a *app) ready(ctx context.Context) error {
	err := a.source.Ping(ctx)
	if err == nil {
		return nil
	}
	held := a.source.Held()
	ce := ldapsource.ConfigurationError(held)
	switch {
	case errors.Is(held, ldapsource.ErrLockedOut):
		return &protocols.NotReadyError{Reason: "the directory reports the service account locked out; tried again once per ldap.locked_retry_interval (fix: " + ce.Key + ")", Err: err}
	case held != nil:
		return &protocols.NotReadyError{Reason: "the directory refused the service account's credentials; not binding with them again until they change (fix: " + ce.Key + ")", Err: err}
	}
	if ce := ldapsource.ConfigurationError(err); ce != nil {
		return &protocols.NotReadyError{Reason: "the directory refuses the configuration (fix: " + ce.Key + ")", Err: err}
	}
	return err
}

// heldState is how a service account held back by Refusals goes on, for
// the log line of a degraded start; "" when it is not held.
func heldState(src *ldapsource.Source) string {
	held := src.Held()
	switch {
	case errors.Is(held, ldapsource.ErrLockedOut):
		return "the service account is tried again once per ldap.locked_retry_interval"
	case held != nil:
		return "mailbeacon does not bind with these credentials again until the password, ldap.bind_dn or ldap.urls change (then reload with SIGHUP)"
	}
	return ""
}
