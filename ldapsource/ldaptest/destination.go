package ldaptest

// A migration in progress, for tests of per-user destinations: users of
// example.com of whom some have moved to a Microsoft 365 tenant (their
// targetAddress is the tenant address, as an Exchange hybrid sets it on a
// remote mailbox) and some to a second site (members of a group).
const (
	// DestinationGroupDN is the group whose members live at site B; its
	// members' entries name it in memberOf, as OpenLDAP's memberof
	// overlay and Active Directory keep it.
	DestinationGroupDN = "cn=site-b,ou=groups,dc=example,dc=com"
	// DestinationTenantDomain is the tenant's routing domain.
	DestinationTenantDomain = "contoso.mail.onmicrosoft.com"
)

// DestinationSchema defines memberOf for the directory of
// DestinationLDIF, which slapd knows only with its memberof overlay: the
// OID is Active Directory's and the overlay's (MS-ADA2, "Attribute
// member-Of": https://learn.microsoft.com/en-us/windows/win32/adschema/a-memberof).
// Load it with WithSchema.
const DestinationSchema = `
attributetype ( 1.2.840.113556.1.2.102 NAME 'memberOf'
    DESC 'Group the entry is a member of'
    EQUALITY distinguishedNameMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 )

objectclass ( 1.3.6.1.4.1.32473.1.2.90 NAME 'groupMember'
    DESC 'Test class: an entry that lists its groups'
    SUP top AUXILIARY
    MAY memberOf )
`

// Destination returns the options that start a slapd holding the demo
// directory plus DestinationLDIF.
func Destination(more ...Option) []Option {
	return append([]Option{WithSchema(DestinationSchema), WithExtraLDIF(DestinationLDIF())}, more...)
}

// DestinationLDIF adds to the demo directory (WithExtraLDIF), each with
// every service in enabledService unless said otherwise and the password
// UserPassword:
//
//	olga@example.com  on premises: no targetAddress, in no group
//	mike@example.com  moved to Microsoft 365: targetAddress
//	                  SMTP:mike@contoso.mail.onmicrosoft.com
//	nina@example.com  moved to Microsoft 365 like mike, without POP3
//	                  (no pop3secured)
//	sam@example.com   at site B: memberOf DestinationGroupDN
//
// and the group DestinationGroupDN under ou=groups.
func DestinationLDIF() string {
	return `dn: ou=groups,dc=example,dc=com
objectClass: organizationalUnit
ou: groups

dn: ` + DestinationGroupDN + `
objectClass: groupOfNames
cn: site-b
member: uid=sam,ou=people,dc=example,dc=com

` + destinationUser("olga", "enabledService: pop3secured") +
		destinationUser("mike", "targetAddress: SMTP:mike@"+DestinationTenantDomain, "enabledService: pop3secured") +
		destinationUser("nina", "targetAddress: SMTP:nina@"+DestinationTenantDomain) +
		destinationUser("sam", "memberOf: "+DestinationGroupDN, "enabledService: pop3secured")
}

// destinationUser is uid=name under ou=people with mail, IMAP and SMTP,
// and the lines given.
func destinationUser(name string, lines ...string) string {
	s := `dn: uid=` + name + `,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: mailUser
objectClass: groupMember
uid: ` + name + `
cn: ` + name + `
sn: ` + name + `
mail: ` + name + `@example.com
userPassword: ` + UserPassword + `
accountStatus: active
enabledService: mail
enabledService: imapsecured
enabledService: smtpsecured
`
	for _, l := range lines {
		s += l + "\n"
	}
	return s + "\n"
}
