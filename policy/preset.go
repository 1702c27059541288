package policy

import (
	"fmt"
	"sort"
)

// A preset is a named starting point for Config, written in the same rule
// language that administrators use to override it.
var presets = map[string]func() Config{
	// generic: any entry the filter finds may use every service of its
	// domain; login is the mail attribute.
	"generic": func() Config {
		return Config{
			Filter:            "(mail={email})",
			DisplayName:       []string{"displayName", "cn"},
			PrimaryAddress:    "mail",
			Login:             "{mail}",
			AccountEnabled:    nil,
			ServiceRules:      map[string]*Rule{},
			HostOverrideKinds: []string{string(IMAP), string(POP3), string(SMTP)},
		}
	},
	// openldap: iRedMail-style entries (objectClass mailUser). accountStatus
	// must be "active", and enabledService lists what a user may use. The
	// "secured" values are the ones iRedMail's Dovecot and Postfix check on
	// TLS connections, and every service mailbeacon offers is TLS-secured by
	// default; "mail" is iRedMail's master switch for all mail services.
	"openldap": func() Config {
		svc := func(v string) *Rule {
			return &Rule{All: []Rule{{Has: "enabledService", Value: "mail"}, {Has: "enabledService", Value: v}}}
		}
		return Config{
			Filter:            "(&(objectClass=mailUser)(|(mail={email})(shadowAddress={email})))",
			DisplayName:       []string{"displayName", "cn"},
			PrimaryAddress:    "mail",
			Login:             "{mail}",
			AccountEnabled:    &Rule{Equals: "accountStatus", Value: "active"},
			HostOverrideKinds: []string{string(IMAP), string(POP3), string(SMTP)},
			ServiceRules: map[string]*Rule{
				string(IMAP):       svc("imapsecured"),
				string(POP3):       svc("pop3secured"),
				string(SMTP):       svc("smtpsecured"),
				string(ActiveSync): {Has: "enabledService", Value: "activesync"},
			},
		}
	},
	// active-directory: user objects of Active Directory (or Samba AD).
	// See activeDirectory.
	"active-directory": activeDirectory,
	// exchange: active-directory plus the per-mailbox protocol switches
	// Exchange keeps in the directory. See exchange.
	"exchange": exchange,
	// zimbra: Zimbra and Carbonio accounts, whose switches a class of
	// service may hold. See zimbra.
	"zimbra": zimbra,
}

// activeDirectory is the active-directory preset.
//
// The filter finds person objects of class user by mail or by any of their
// proxyAddresses ("smtp:" matches "SMTP:" too: AD compares the values
// case-insensitively). The primary address is the proxyAddresses value
// marked "SMTP:", else mail. The login is the userPrincipalName, which AD
// accepts as a bind name (as it does DOMAIN\sAMAccountName; a bare
// sAMAccountName it refuses). An account is disabled when
// userAccountControl has ACCOUNTDISABLE (0x2). member_of rules honour
// nested groups. Per-service rules are left to the configuration, usually
// member_of rules:
//
//	pop3: {not: {member_of: "CN=Mail-POP3-Disabled,OU=Groups,DC=example,DC=com"}}
//	activesync: {member_of: "CN=Mobile-Users,OU=Groups,DC=example,DC=com"}
func activeDirectory() Config {
	nested := true
	return Config{
		Filter:            "(&(objectCategory=person)(objectClass=user)(|(mail={email})(proxyAddresses=smtp:{email})))",
		DisplayName:       []string{"displayName", "cn"},
		PrimaryAddress:    "proxyAddresses:SMTP:, mail",
		Login:             "{userPrincipalName}",
		AccountEnabled:    &Rule{BitClear: "userAccountControl", Mask: "0x2"},
		ServiceRules:      map[string]*Rule{},
		HostOverrideKinds: []string{string(IMAP), string(POP3), string(SMTP)},
		NestedGroups:      &nested,
	}
}

// exchange is the exchange preset: active-directory, and the switches with
// which Exchange turns protocols off per mailbox.
//
// protocolSettings is multi-valued, one string per protocol, fields
// separated by "§" (U+00A7): the protocol name, then 1 (enabled) or 0
// (disabled), then settings that do not matter here, e.g.
// "POP3§0§1§4§ISO-8859-1§0§§§" or "IMAP4§0§1§4§ISO-8859-1§0§1§0§0". No
// value for a protocol means it is enabled (the default). Sources:
// Microsoft KB 236983 ("The number that follows the first § symbol disables
// or enables that protocol"; mirrored at
// https://cave.servium.ch/mirror/ftp.zx.net.nz/archive/ftp.microsoft.com/MISC/KB/en-us/236/983.HTM),
// and Microsoft's ADRecipient.ProtocolSettings reference ("a multivalued
// string property, where each string applies to a different protocol",
// https://learn.microsoft.com/en-us/previous-versions/exchange-server/exchange-150/ff345785(v=exchg.150)).
//
// msExchOmaAdminWirelessEnable holds bit flags; 0 or no value means all
// mobile services are enabled, and bit 0x4 set means user-initiated
// synchronization, that is Exchange ActiveSync, is disabled (0x1: up-to-date
// notifications off, 0x2: Outlook Mobile Access off; Exchange 2007 and
// later keep Set-CASMailbox -ActiveSyncEnabled in the same bit). Microsoft's
// System Center Mobile Device Manager SDK documents another bit of this
// attribute (0x20, policy exemption: "Exchange Mobility
// Provider::SetUserPolicyExemption"), but no Microsoft page found states the
// 0x1/0x2/0x4 meanings: they are taken from third-party documentation that
// agrees on them (https://knowledge.broadcom.com/external/article/17022,
// https://www.tools4ever.nl/blog/2008/ldap-managing-exchange-features-using-protocolsettings-attribute/,
// http://sysadmin-e.com/activesync-msexchomaadminwirelessenable).
//
// msExchEwsEnabled is the mailbox's Exchange Web Services switch
// (Set-CASMailbox -EwsEnabled): 0 disabled, 1 enabled, no value means the
// organisation's default, enabled (Microsoft's "Filterable properties for
// the Filter parameter", EwsEnabled: "0 (disabled), 1 (enabled) or $null",
// https://learn.microsoft.com/en-us/powershell/exchange/filter-properties).
//
// msExchHideFromAddressLists is not read: hiding a mailbox from the address
// book does not change how its owner connects.
func exchange() Config {
	c := activeDirectory()
	c.ServiceRules = map[string]*Rule{
		string(POP3):       {Not: &Rule{HasPrefix: "protocolSettings", Value: "POP3§0"}},
		string(IMAP):       {Not: &Rule{HasPrefix: "protocolSettings", Value: "IMAP4§0"}},
		string(ActiveSync): {BitClear: "msExchOmaAdminWirelessEnable", Mask: "0x4"},
		string(EWS):        {Not: &Rule{Equals: "msExchEwsEnabled", Value: "0"}},
	}
	return c
}

// zimbra is the zimbra preset, for Zimbra Collaboration and Carbonio,
// which keeps Zimbra's directory schema.
//
// Accounts (object class zimbraAccount) are found by
// zimbraMailDeliveryAddress, their address, or zimbraMailAlias, their
// aliases; the login is the delivery address. An account is enabled when
// zimbraAccountStatus is "active" (locked, closed, maintenance, lockout
// and pending accounts cannot log in). zimbraMailHost, the server holding
// the mailbox, replaces the domain's host for IMAP, POP3 and SMTP.
// zimbraImapEnabled, zimbraPop3Enabled, zimbraFeatureMobileSyncEnabled
// (ActiveSync) and zimbraFeatureEwsEnabled are booleans, TRUE or FALSE,
// that an account inherits from its class of service (COS) when it has
// none of its own: the COS whose zimbraId is the account's zimbraCOSId,
// else the one whose zimbraId is its domain's zimbraDomainDefaultCOSId,
// else the COS named "default", cn=default,cn=cos,cn=zimbra. The domain
// is the zimbraDomain entry whose zimbraDomainName is the domain of the
// account's zimbraMailDeliveryAddress. A switch found nowhere is off:
// Zimbra's own default COS always carries them.
//
// Sources: Zimbra's attribute definitions, zimbra-attrs.xml
// (https://github.com/Zimbra/zm-mailbox/blob/develop/store/conf/attrs/zimbra-attrs.xml:
// zimbraAccountStatus "active,maintenance,locked,closed,lockout,pending",
// zimbraImapEnabled and zimbraPop3Enabled "optionalIn account,cos" with
// the flag accountInherited, zimbraCOSId "COS zimbraID",
// zimbraDomainDefaultCOSId), its object classes, zimbra-ocs.xml (same
// directory: "zimbraCOS ... used as default values for accounts that
// belong to the COS and do not have the same attribute defined in the
// account directory entry"), and Zimbra's account creation in
// LdapProvisioning.java (same repository), which picks the COS in the
// order above. Carbonio's mailbox carries the same attribute file,
// names and ids unchanged
// (https://github.com/zextras/carbonio-mailbox/blob/d121b47b1ecde70c2008c5014b6d47eed16e8aba/attribute-manager/src/main/resources/conf/attrs/attrs.xml).
func zimbra() Config {
	on := func(attr string) *Rule { return &Rule{Equals: attr, Value: "TRUE"} }
	switches := []string{"zimbraImapEnabled", "zimbraPop3Enabled", "zimbraFeatureMobileSyncEnabled", "zimbraFeatureEwsEnabled"}
	return Config{
		Filter:            "(&(objectClass=zimbraAccount)(|(zimbraMailDeliveryAddress={email})(zimbraMailAlias={email})))",
		DisplayName:       []string{"displayName", "cn"},
		PrimaryAddress:    "zimbraMailDeliveryAddress",
		Login:             "{zimbraMailDeliveryAddress}",
		AccountEnabled:    &Rule{Equals: "zimbraAccountStatus", Value: "active"},
		HostAttribute:     "zimbraMailHost",
		HostOverrideKinds: []string{string(IMAP), string(POP3), string(SMTP)},
		ServiceRules: map[string]*Rule{
			string(IMAP):       on("zimbraImapEnabled"),
			string(POP3):       on("zimbraPop3Enabled"),
			string(ActiveSync): on("zimbraFeatureMobileSyncEnabled"),
			string(EWS):        on("zimbraFeatureEwsEnabled"),
		},
		Linked: []LinkedConfig{
			{
				Name: "domain",
				Find: []string{"(&(objectClass=zimbraDomain)(zimbraDomainName={zimbraMailDeliveryAddress:domain}))"},
			},
			{
				Name:   "cos",
				BaseDN: "cn=cos,cn=zimbra",
				Scope:  "one",
				Find: []string{
					"(&(objectClass=zimbraCOS)(zimbraId={zimbraCOSId}))",
					"(&(objectClass=zimbraCOS)(zimbraId={domain.zimbraDomainDefaultCOSId}))",
				},
				DN:      "cn=default,cn=cos,cn=zimbra",
				Inherit: switches,
			},
		},
	}
}

// PresetNames lists the presets, sorted.
func PresetNames() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Preset returns a fresh copy of the named preset.
func Preset(name string) (Config, error) {
	p, ok := presets[name]
	if !ok {
		return Config{}, fmt.Errorf("unknown preset %q (one of %v)", name, PresetNames())
	}
	return p(), nil
}
