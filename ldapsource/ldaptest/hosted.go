package ldaptest

// HostedLDIF adds iRedMail-style hosted domains to the demo directory, for
// tests of the directory domain source (add it with WithExtraLDIF):
//   - hosted.example: active, provider "Hosted Ltd", alias domain
//     alias.example, local transport (dovecot);
//   - nopop.example: active, POP3 turned off for the whole domain;
//   - relay.example: active, mail relayed to mx1.relay.example;
//   - off.example: disabled.
//
// hanna@hosted.example and nora@nopop.example are users with every
// service; their password is UserPassword.
const HostedLDIF = `dn: o=domains,dc=example,dc=com
objectClass: organization
o: domains

dn: domainName=hosted.example,o=domains,dc=example,dc=com
objectClass: mailDomain
domainName: hosted.example
cn: Hosted Ltd
accountStatus: active
domainAliasName: alias.example
mtaTransport: dovecot

dn: domainName=nopop.example,o=domains,dc=example,dc=com
objectClass: mailDomain
domainName: nopop.example
accountStatus: active
disabledService: pop3

dn: domainName=relay.example,o=domains,dc=example,dc=com
objectClass: mailDomain
domainName: relay.example
accountStatus: active
mtaTransport: relay:[mx1.relay.example]:25

dn: domainName=off.example,o=domains,dc=example,dc=com
objectClass: mailDomain
domainName: off.example
accountStatus: disabled

dn: uid=hanna,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: mailUser
uid: hanna
cn: Hanna Hosted
sn: Hosted
mail: hanna@hosted.example
userPassword: Secret123!
accountStatus: active
enabledService: mail
enabledService: imapsecured
enabledService: pop3secured
enabledService: smtpsecured

dn: uid=nora,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: mailUser
uid: nora
cn: Nora Nopop
sn: Nopop
mail: nora@nopop.example
userPassword: Secret123!
accountStatus: active
enabledService: mail
enabledService: imapsecured
enabledService: pop3secured
enabledService: smtpsecured
`
