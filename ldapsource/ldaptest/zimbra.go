package ldaptest

import "strings"

// The Zimbra test directory, laid out as Zimbra keeps it: the domain
// example.com is the entry dc=example,dc=com (object class zimbraDomain),
// school.example.com is dc=school,dc=example,dc=com, accounts are
// uid=NAME,ou=people under their domain, and the classes of service are
// cn=NAME,cn=cos,cn=zimbra, in a naming context of their own. Schema:
// Schema("zimbra").
const (
	ZimbraSuffix = "cn=zimbra"
	// The classes of service: default allows IMAP and POP3 but not
	// mobile sync; students allows IMAP and mobile sync but not POP3.
	// Neither allows EWS.
	ZimbraDefaultCOSDN  = "cn=default,cn=cos,cn=zimbra"
	ZimbraStudentsCOSDN = "cn=students,cn=cos,cn=zimbra"
	ZimbraDefaultCOSID  = "e00428a1-0c00-11d9-836a-000d93afea2a"
	ZimbraStudentsCOSID = "5b8e6c1e-8f7a-4d7e-9b43-0d6c1f2a9e11"
)

// Zimbra returns the options that start a slapd holding the Zimbra test
// directory (ZimbraLDIF) with the Zimbra schema and the cn=zimbra naming
// context. More options (WithExtraLDIF) may follow.
func Zimbra(more ...Option) []Option {
	return append([]Option{WithLDIF(ZimbraLDIF()), WithSchema(Schema("zimbra")), WithSuffix(ZimbraSuffix)}, more...)
}

// ZimbraLDIF is the Zimbra test directory, with the service account
// (ServiceDN, ServicePassword). Every user's password is UserPassword.
// The accounts of example.com, whose domain names no default class of
// service (so Zimbra's COS "default" applies):
//
//	ada@example.com     active, zimbraCOSId students: no POP3, mobile sync,
//	                    from the COS; alias ada.lovelace@example.com;
//	                    zimbraMailHost mbox1.example.com
//	bob@example.com     active, no COS of its own: COS default
//	locked@example.com  zimbraAccountStatus locked
//	closed@example.com  zimbraAccountStatus closed
//	noimap@example.com  own zimbraImapEnabled FALSE
//	nopop@example.com   own zimbraPop3Enabled FALSE (the COS says TRUE)
//	pop@example.com     zimbraCOSId students, own zimbraPop3Enabled TRUE
//	mobile@example.com  own zimbraFeatureMobileSyncEnabled TRUE
//	ews@example.com     own zimbraFeatureEwsEnabled TRUE
//
// and of school.example.com, whose domain's default class of service
// (zimbraDomainDefaultCOSId) is students:
//
//	carol@school.example.com  active, no COS of its own: COS students
func ZimbraLDIF() string {
	return zimbraBaseLDIF +
		zimbraAccount("ada", "example.com", "active", "zimbraCOSId: "+ZimbraStudentsCOSID,
			"zimbraMailAlias: ada.lovelace@example.com", "zimbraMailHost: mbox1.example.com") +
		zimbraAccount("bob", "example.com", "active") +
		zimbraAccount("locked", "example.com", "locked") +
		zimbraAccount("closed", "example.com", "closed") +
		zimbraAccount("noimap", "example.com", "active", "zimbraImapEnabled: FALSE") +
		zimbraAccount("nopop", "example.com", "active", "zimbraPop3Enabled: FALSE") +
		zimbraAccount("pop", "example.com", "active", "zimbraCOSId: "+ZimbraStudentsCOSID, "zimbraPop3Enabled: TRUE") +
		zimbraAccount("mobile", "example.com", "active", "zimbraFeatureMobileSyncEnabled: TRUE") +
		zimbraAccount("ews", "example.com", "active", "zimbraFeatureEwsEnabled: TRUE") +
		zimbraAccount("carol", "school.example.com", "active")
}

// zimbraBaseLDIF holds the domains, the service account and the classes
// of service.
const zimbraBaseLDIF = `dn: dc=example,dc=com
objectClass: dcObject
objectClass: organization
objectClass: zimbraDomain
dc: example
o: example.com
zimbraId: 0b7b5d0f-1e0b-4c1c-a3a4-6f1f3c2d9a01
zimbraDomainName: example.com

` + ServiceLDIF + `
dn: dc=school,dc=example,dc=com
objectClass: dcObject
objectClass: organization
objectClass: zimbraDomain
dc: school
o: school.example.com
zimbraId: 9d1c3b52-7a3e-4f0e-8c55-2b6a1d4e7f02
zimbraDomainName: school.example.com
zimbraDomainDefaultCOSId: ` + ZimbraStudentsCOSID + `

dn: ou=people,dc=school,dc=example,dc=com
objectClass: organizationalUnit
ou: people

dn: cn=zimbra
objectClass: organizationalRole
cn: zimbra

dn: cn=cos,cn=zimbra
objectClass: organizationalRole
cn: cos

dn: ` + ZimbraDefaultCOSDN + `
objectClass: zimbraCOS
cn: default
zimbraId: ` + ZimbraDefaultCOSID + `
zimbraImapEnabled: TRUE
zimbraPop3Enabled: TRUE
zimbraFeatureMobileSyncEnabled: FALSE
zimbraFeatureEwsEnabled: FALSE

dn: ` + ZimbraStudentsCOSDN + `
objectClass: zimbraCOS
cn: students
zimbraId: ` + ZimbraStudentsCOSID + `
zimbraImapEnabled: TRUE
zimbraPop3Enabled: FALSE
zimbraFeatureMobileSyncEnabled: TRUE
zimbraFeatureEwsEnabled: FALSE
`

// zimbraAccount is the LDIF record of an account uid@domain with status
// and more attribute lines.
func zimbraAccount(uid, domain, status string, more ...string) string {
	dn := "uid=" + uid + ",ou=people,dc=" + strings.ReplaceAll(domain, ".", ",dc=")
	rec := "\ndn: " + dn + "\nobjectClass: inetOrgPerson\nobjectClass: zimbraAccount\nuid: " + uid +
		"\ncn: " + uid + "\nsn: " + uid + "\ndisplayName: " + uid + " (" + domain + ")" +
		"\nuserPassword: " + UserPassword + "\nzimbraId: " + zimbraID(uid) +
		"\nzimbraAccountStatus: " + status + "\nzimbraMailDeliveryAddress: " + uid + "@" + domain + "\n"
	for _, m := range more {
		rec += m + "\n"
	}
	return rec
}

// zimbraID is a fixed, distinct id for a test account.
func zimbraID(uid string) string {
	b := []byte("00000000-0000-4000-8000-000000000000")
	for i, j := len(b)-1, len(uid)-1; j >= 0 && i >= 0; i, j = i-1, j-1 {
		b[i] = "0123456789abcdef"[uid[j]%16]
	}
	return string(b)
}
