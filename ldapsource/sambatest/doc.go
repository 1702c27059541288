// Package sambatest starts a throwaway Samba Active Directory domain
// controller for integration tests.
//
// Samba's LDAP ports are fixed (389 and 636), so every DC runs in a network
// namespace of its own, which the test creates (a veth pair; the host side
// is 10.213.N.1, the DC 10.213.N.2) and removes when it ends. Provisioning a
// domain takes several seconds, so it happens once into a template under
// os.TempDir(), keyed by the Samba version and this package's seed data and
// guarded by a file lock so that test packages running in parallel share it;
// each DC is a copy of the template and answers within about a second. The
// DC runs with Active Directory's default of refusing simple binds over
// plain LDAP: use StartTLS or ldaps://, with the throwaway CA in CAFile (the
// certificate is made per DC: its subjectAltName holds the DC's address).
// Samba's --maximum-runtime and a watchdog process make sure no DC or
// namespace outlives the test process, even when it is killed.
//
// It needs Linux, root (for network namespaces), iproute2's ip, and Samba's
// AD DC with its provisioning data and Python module for /usr/bin/python3
// (Debian: apt-get install --no-install-recommends samba samba-ad-dc
// samba-ad-provision iproute2). When they are missing, DC skips the test,
// or fails it when the environment variable CI is "true".
//
// # The directory
//
// Realm EXAMPLE.TEST, NetBIOS domain EXAMPLE, base DN DC=example,DC=test.
// Users live in CN=Users (CN is the sAMAccountName, UPN is
// sAMAccountName@example.test, password UserPassword unless noted); groups in
// OU=Groups. The domain locks an account after three wrong passwords.
//
//	sAMAccountName  mail / proxyAddresses                       notes
//	svc-mailbeacon  -                                           service account, a plain domain user, ServicePassword
//	asmith          alice@example.test                          displayName "Alice Smith"; member of Mobile-Users;
//	                SMTP:alice@example.test                     msExchOmaAdminWirelessEnable 0
//	                smtp:a.example@example.test, smtp:alice.smith@example.test
//	bob.login       bob@example.test, SMTP:bob@example.test     direct member of Mail-POP3-Disabled;
//	                                                            protocolSettings POP3§0§… (POP3 off);
//	                                                            msExchOmaAdminWirelessEnable 4 (ActiveSync off)
//	carol           carol@example.test                          disabled (userAccountControl 514)
//	dave            dave@example.test                           member of Contractors, itself a member of
//	                                                            Mail-POP3-Disabled; member of Mobile-Users
//	erin            erin@example.test                           protocolSettings IMAP4§0§… (IMAP off), POP3§1§…,
//	                                                            HTTP§0§…; msExchHideFromAddressLists TRUE
//	frank           no mail; SMTP:frank@example.test,           found only through proxyAddresses
//	                smtp:f@example.test
//	henry           henry@example.test                          accountExpires 2021-01-01 (expired)
//	ivan            ivan@example.test                           for lockout tests
//	twin1, twin2    twins@example.test is twin1's mail and      an ambiguous address
//	                one of twin2's proxyAddresses
//
// asmith, bob.login and erin have an msExchMailboxGuid (Exchange's mark of
// a mailbox user). protocolSettings, msExchOmaAdminWirelessEnable,
// msExchHideFromAddressLists and msExchMailboxGuid are not in Samba's
// schema: the seed adds them under Exchange's names with OIDs of the RFC
// 5612 documentation arc.
package sambatest
