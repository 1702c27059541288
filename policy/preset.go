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
	// iredmail: iRedMail's entries. See iredmail.
	"iredmail": iredmail,
	// active-directory: user objects of Active Directory (or Samba AD).
	// See activeDirectory.
	"active-directory": activeDirectory,
	// exchange: active-directory plus the per-mailbox protocol switches
	// Exchange keeps in the directory. See exchange.
	"exchange": exchange,
	// univention: Univention Corporate Server. See univention.
	"univention": univention,
	// kolab: Kolab on 389 Directory Server. See kolab.
	"kolab": kolab,
	// qmail-ldap: qmail-ldap's qmailUser entries. See qmailLDAP.
	"qmail-ldap": qmailLDAP,
	// postfix-book: the schema of "The Book of Postfix". See postfixBook.
	"postfix-book": postfixBook,
	// zimbra: Zimbra and Carbonio accounts, whose switches a class of
	// service may hold. See zimbra.
	"zimbra": zimbra,
}

// presetAliases are names a preset used to have: still accepted, and
// warned about (PresetReplacement).
var presetAliases = map[string]string{
	// openldap named the iredmail preset after the directory rather than
	// the mail stack whose attributes it reads.
	"openldap": "iredmail",
}

// PresetReplacement returns the current name of a preset that name used
// to be, and whether name is such an old name: configurations still
// naming it work, and should be told the new name.
func PresetReplacement(name string) (string, bool) {
	n, ok := presetAliases[name]
	return n, ok
}

// DefaultPreset is the preset of a configuration that names none.
const DefaultPreset = "iredmail"

// iredmail is the iredmail preset: iRedMail's entries (objectClass
// mailUser), found by mail or by one of their shadowAddress aliases.
// accountStatus must be "active", and enabledService lists what a user may
// use. The "secured" values are the ones iRedMail's Dovecot and Postfix
// check on TLS connections, and every service mailbeacon offers is
// TLS-secured by default; "mail" is iRedMail's master switch for all mail
// services.
func iredmail() Config {
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
}

// univention is the univention preset: users of Univention Corporate
// Server's mail stack, objectClass univentionMail, found by
// mailPrimaryAddress or one of their mailAlternativeAddress values
// (UCS's mail.schema, https://github.com/univention/univention-corporate-server,
// management/univention-ldap/schema/mail.schema). The login is the
// mailPrimaryAddress, the user name UCS's Dovecot gives a mailbox
// (mail/univention-mail-dovecot/conffiles/etc/dovecot/dovecot-ldap.conf.ext:
// user = %{ldap:mailPrimaryAddress}), and univentionMailHomeServer, the
// server holding the mailbox, replaces the domain's host.
//
// UCS's Dovecot checks passwords through PAM, with pam_ldap and then
// pam_krb5 (conffiles/etc/pam.d/dovecot), so an account is refused where
// UCS deactivates it. A deactivated user has, per UCS's "Account status
// flags in UDM users/user"
// (management/univention-directory-manager-modules/README-users-user-account-states.md),
// the Kerberos flag 0x80 ("invalid" in Heimdal's krb5-kdc.schema) set in
// krb5KDCFlags, sambaAcctFlags containing D, or shadowExpire 1 or a day
// before today (a password hash starting with "!" too, which mailbeacon
// does not read). The preset reads the first and the last: UDM sets them
// together when an account is deactivated, and shadowExpire also holds
// the account's expiry date, which pam_unix and pam_ldap check. UCS has
// no per-user switch for single protocols, so no service has a rule.
func univention() Config {
	return Config{
		Filter:         "(&(objectClass=univentionMail)(|(mailPrimaryAddress={email})(mailAlternativeAddress={email})))",
		DisplayName:    []string{"displayName", "cn"},
		PrimaryAddress: "mailPrimaryAddress",
		Login:          "{mailPrimaryAddress}",
		AccountEnabled: &Rule{All: []Rule{
			{BitClear: "krb5KDCFlags", Mask: "0x80"},
			{Not: &Rule{DaysPast: "shadowExpire"}},
		}},
		ServiceRules:      map[string]*Rule{},
		HostAttribute:     "univentionMailHomeServer",
		HostOverrideKinds: []string{string(IMAP), string(POP3), string(SMTP)},
	}
}

// kolab is the kolab preset: Kolab's users on 389 Directory Server,
// objectClass kolabInetOrgPerson, found by mail, by one of their alias
// values (Kolab's schema: "alias used to provide alternative rfc822 email
// addresses for kolab users", kolab-schema.ldif in the Kolab source,
// docker/ds389/, https://git.kolab.org/source/kolab/) or by
// mailAlternateAddress (389 DS's mailRecipient). The login is the mail
// address, and mailHost replaces the domain's host.
//
// An account is disabled when inetUserStatus says so: Kolab keeps a bit
// field there (src/app/User.php: 0x4 suspended, 0x8 deleted; its Postfix
// lookups leave out users with the suspended bit), 389 DS's schema the
// words "active", "inactive" or "deleted" (attribute 2.16.840.1.113730.3.1.692);
// or when 389 DS's nsAccountLock is "true" (the directory then refuses
// the user's binds). No inetUserStatus means active.
//
// Kolab gives services by managed role, in nsRoleDN: a user with the role
// cn=activesync-user,<root DN> may use ActiveSync (Kolab's LDAP backend,
// src/app/Backends/LDAP.php, sets it from the "activesync" entitlement).
// The rule compares the role's first RDN only, since the root DN is the
// deployment's. cn=imap-user is not read: Kolab gives it to users without
// the groupware entitlement, and users with it keep IMAP.
func kolab() Config {
	return Config{
		Filter:         "(&(objectClass=kolabInetOrgPerson)(|(mail={email})(alias={email})(mailAlternateAddress={email})))",
		DisplayName:    []string{"displayName", "cn"},
		PrimaryAddress: "mail",
		Login:          "{mail}",
		AccountEnabled: &Rule{All: []Rule{
			{BitClear: "inetUserStatus", Mask: "0xC"},
			{Not: &Rule{Equals: "inetUserStatus", Value: "inactive"}},
			{Not: &Rule{Equals: "inetUserStatus", Value: "deleted"}},
			{Not: &Rule{Equals: "nsAccountLock", Value: "true"}},
		}},
		ServiceRules: map[string]*Rule{
			string(ActiveSync): {HasPrefix: "nsRoleDN", Value: "cn=activesync-user,"},
		},
		HostAttribute:     "mailHost",
		HostOverrideKinds: []string{string(IMAP), string(POP3), string(SMTP)},
	}
}

// qmailLDAP is the qmail-ldap preset: qmail-ldap's entries, objectClass
// qmailUser, found by mail or one of their mailAlternateAddress values
// (qmail.schema, https://github.com/qmail-ldap/qmail-ldap/blob/master/qmail.schema).
// The login is uid, "the username for POP3 and IMAP", and mailHost, "on
// which qmail server the messagestore of this user is located", replaces
// the domain's host (QLDAPINSTALL, DEFAULT LDAP PARAMETER FIELDS,
// https://github.com/qmail-ldap/qmail-ldap/blob/master/QLDAPINSTALL).
//
// accountStatus, per QLDAPINSTALL: "active" (no restrictions), "nopop"
// (mail delivery but no POP access), "disabled" and "deleted" (incoming
// mail bounced); no accountStatus is active. So disabled and deleted
// accounts are disabled, and nopop takes POP3 away. qmail-ldap's
// checkpassword, which its IMAP authenticator (auth_imap) shares with
// auth_pop, refuses nopop accounts too: where IMAP logins go through it,
// add imap: {not: {equals: accountStatus, value: nopop}}.
func qmailLDAP() Config {
	return Config{
		Filter:         "(&(objectClass=qmailUser)(|(mail={email})(mailAlternateAddress={email})))",
		DisplayName:    []string{"displayName", "cn"},
		PrimaryAddress: "mail",
		Login:          "{uid}",
		AccountEnabled: &Rule{All: []Rule{
			{Not: &Rule{Equals: "accountStatus", Value: "disabled"}},
			{Not: &Rule{Equals: "accountStatus", Value: "deleted"}},
		}},
		ServiceRules: map[string]*Rule{
			string(POP3): {Not: &Rule{Equals: "accountStatus", Value: "nopop"}},
		},
		HostAttribute:     "mailHost",
		HostOverrideKinds: []string{string(IMAP), string(POP3), string(SMTP)},
	}
}

// postfixBook is the postfix-book preset: entries of the schema written
// for "The Book of Postfix" (postfix-book.schema, OIDs under
// 1.3.6.1.4.1.29426; published with the book and in
// https://github.com/variablenix/ldap-mail-schema), objectClass
// PostfixBookMailAccount, found by mail or one of their mailAlias values.
// mailEnabled is "TRUE to enable, FALSE to disable account" (the schema's
// description); the lookups built on it ask for mailEnabled=TRUE, so an
// entry without it is disabled too. The schema has no per-service switch
// and no per-user host. The login is the mail address.
func postfixBook() Config {
	return Config{
		Filter:            "(&(objectClass=PostfixBookMailAccount)(|(mail={email})(mailAlias={email})))",
		DisplayName:       []string{"displayName", "cn"},
		PrimaryAddress:    "mail",
		Login:             "{mail}",
		AccountEnabled:    &Rule{Equals: "mailEnabled", Value: "TRUE"},
		ServiceRules:      map[string]*Rule{},
		HostOverrideKinds: []string{string(IMAP), string(POP3), string(SMTP)},
	}
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

// Preset returns a fresh copy of the named preset; an old name of a
// preset (PresetReplacement) gives the preset it names.
func Preset(name string) (Config, error) {
	if n, ok := presetAliases[name]; ok {
		name = n
	}
	p, ok := presets[name]
	if !ok {
		return Config{}, fmt.Errorf("unknown preset %q (one of %v)", name, PresetNames())
	}
	return p(), nil
}
