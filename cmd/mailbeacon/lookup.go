package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/mailbeacon/mailbeacon/policy"
)

// lookupOutput is what `mailbeacon lookup` prints.
type lookupOutput struct {
	Account accountJSON `json:"account"`
	// Domain says which configuration or directory entry made the
	// domain, and which template produced each of its services.
	Domain      *policy.DomainOrigin `json:"domain"`
	Explanation *policy.Explanation  `json:"explanation"`
}

type accountJSON struct {
	Address     string        `json:"address"`
	Primary     string        `json:"primary"`
	DisplayName string        `json:"display_name"`
	Known       bool          `json:"known"`
	Domain      string        `json:"domain"`
	Services    []serviceJSON `json:"services"`
}

type serviceJSON struct {
	Type   string   `json:"type"`
	Host   string   `json:"host,omitempty"`
	Port   int      `json:"port,omitempty"`
	Socket string   `json:"socket,omitempty"`
	Auth   []string `json:"auth"`
	Login  string   `json:"login"`
	URL    string   `json:"url,omitempty"`
}

func lookupCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lookup", flag.ContinueOnError)
	var c commonFlags
	c.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: mailbeacon lookup [--config FILE] [--demo] ADDRESS\n\n"+
			"Look ADDRESS up in the directory (bypassing the cache) and print the account\n"+
			"as JSON, with the rule that allowed or removed each service and the directory\n"+
			"server that answered.\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errUsage
	}
	addr, err := policy.ParseAddress(fs.Arg(0))
	if err != nil {
		return err
	}
	a, _, cleanup, err := setup(c, stderr)
	if err != nil {
		return err
	}
	defer cleanup()
	acct, ex, err := a.resolver.Explain(ctx, addr)
	if err != nil {
		return fmt.Errorf("lookup %s: %w", addr, err)
	}
	out := lookupOutput{Account: toAccountJSON(acct), Domain: acct.Domain.Origin, Explanation: ex}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(out)
}

func toAccountJSON(a *policy.Account) accountJSON {
	out := accountJSON{
		Address: a.Address.String(), Primary: a.Primary, DisplayName: a.DisplayName,
		Known: a.Known, Domain: a.Domain.Name, Services: []serviceJSON{},
	}
	for _, s := range a.Services {
		sj := serviceJSON{Type: string(s.Kind), Host: s.Host, Port: s.Port, Socket: string(s.Socket), Login: s.Login, URL: s.URL}
		for _, au := range s.Auth {
			sj.Auth = append(sj.Auth, string(au))
		}
		out.Services = append(out.Services, sj)
	}
	return out
}
