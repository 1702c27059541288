"""Seed a freshly provisioned, not running, Samba AD DC for mailbeacon's
tests, directly through its sam.ldb: Exchange-like schema attributes, users,
aliases, groups (one nested), a lockout policy.

usage: /usr/bin/python3 seed.py SMB_CONF USER_PASSWORD SERVICE_PASSWORD

Debian ships Samba's Python module for /usr/bin/python3 only. The users and
groups are described in the package documentation of sambatest (doc.go);
keep both in step.
"""
import secrets
import sys

from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB

conf, user_password, service_password = sys.argv[1:4]
lp = LoadParm()
lp.load(conf)
db = SamDB(url=lp.samdb_url(), session_info=system_session(), lp=lp)
base = str(db.domain_dn())
schema = str(db.get_schema_basedn())

# Exchange's attribute names with OIDs from the RFC 5612 documentation arc
# (1.3.6.1.4.1.32473), not Microsoft's: just enough schema to store the
# values mailbeacon's exchange preset reads. Needs "dsdb:schema update
# allowed = true" in the configuration.
for cn, name, oid, syntax, om, single in [
    ("ms-Exch-Protocol-Settings", "protocolSettings", "1.3.6.1.4.1.32473.1.3.2", "2.5.5.12", 64, "FALSE"),
    ("ms-Exch-Oma-Admin-Wireless-Enable", "msExchOmaAdminWirelessEnable", "1.3.6.1.4.1.32473.1.3.1", "2.5.5.9", 2, "TRUE"),
    ("ms-Exch-Hide-From-Address-Lists", "msExchHideFromAddressLists", "1.3.6.1.4.1.32473.1.3.4", "2.5.5.8", 1, "TRUE"),
    ("ms-Exch-Mailbox-Guid", "msExchMailboxGuid", "1.3.6.1.4.1.32473.1.3.5", "2.5.5.10", 4, "TRUE"),
]:
    db.add_ldif(f"""dn: CN={cn},{schema}
objectClass: top
objectClass: attributeSchema
cn: {cn}
lDAPDisplayName: {name}
attributeID: {oid}
attributeSyntax: {syntax}
oMSyntax: {om}
isSingleValued: {single}
searchFlags: 0
""")
db.set_schema_update_now()
db.modify_ldif(f"""dn: CN=User,{schema}
changetype: modify
add: mayContain
mayContain: protocolSettings
mayContain: msExchOmaAdminWirelessEnable
mayContain: msExchHideFromAddressLists
mayContain: msExchMailboxGuid
""")
db.set_schema_update_now()


def modify(dn, **attrs):
    lines = [f"dn: {dn}", "changetype: modify"]
    for k, vals in attrs.items():
        k = k.replace("_", "-")
        lines.append(f"replace: {k}")
        for v in vals if isinstance(vals, list) else [vals]:
            lines.append(f"{k}: {v}")
        lines.append("-")
    db.modify_ldif("\n".join(lines) + "\n")


def user_dn(sam):
    return f"CN={sam},CN=Users,{base}"


# Three wrong passwords lock an account (msDS-User-Account-Control-Computed
# then has UF_LOCKOUT, 0x10).
modify(base, lockoutThreshold="3")

# The Exchange formats: protocolSettings "<protocol>§<1 enabled|0 disabled>§...",
# msExchOmaAdminWirelessEnable bit 0x4 = ActiveSync off.
S = "\u00a7"
users = {
    # sAMAccountName: (given name, surname, mail, other attributes)
    "svc-mailbeacon": (None, None, None, {"description": "mailbeacon's service account: a plain domain user"}),
    "asmith": ("Alice", "Smith", "alice@example.test", {
        "displayName": "Alice Smith",
        "proxyAddresses": ["SMTP:alice@example.test", "smtp:a.example@example.test", "smtp:alice.smith@example.test"],
        "msExchOmaAdminWirelessEnable": "0"}),
    "bob.login": ("Bob", "Builder", "bob@example.test", {
        "proxyAddresses": ["SMTP:bob@example.test"],
        "protocolSettings": [f"POP3{S}0{S}1{S}4{S}ISO-8859-1{S}0{S}{S}{S}"],
        "msExchOmaAdminWirelessEnable": "4"}),
    "carol": ("Carol", "Closed", "carol@example.test", {}),
    "dave": ("Dave", "Contractor", "dave@example.test", {}),
    "erin": ("Erin", "Example", "erin@example.test", {
        "protocolSettings": [f"IMAP4{S}0{S}1{S}4{S}ISO-8859-1{S}0{S}1{S}0{S}0",
                             f"POP3{S}1{S}1{S}4{S}ISO-8859-1{S}0{S}{S}{S}",
                             f"HTTP{S}0{S}1{S}{S}{S}{S}{S}{S}"],
        "msExchHideFromAddressLists": "TRUE"}),
    "frank": ("Frank", "Proxy", None, {
        "proxyAddresses": ["SMTP:frank@example.test", "smtp:f@example.test"]}),
    "henry": ("Henry", "Expired", "henry@example.test", {"accountExpires": "132539328000000000"}),  # 2021-01-01
    "ivan": ("Ivan", "Lockout", "ivan@example.test", {}),
    "twin1": ("Twin", "One", "twins@example.test", {}),
    "twin2": ("Twin", "Two", "twin2@example.test", {"proxyAddresses": ["SMTP:twin2@example.test", "smtp:twins@example.test"]}),
}
for sam, (given, surname, mail, extra) in users.items():
    password = service_password if sam == "svc-mailbeacon" else user_password
    db.newuser(sam, password, useusernameascn=True, givenname=given, surname=surname, mailaddress=mail)
    if extra:
        modify(user_dn(sam), **extra)
db.disable_account("(sAMAccountName=carol)")

# msExchMailboxGuid, the 16 bytes of an Exchange mailbox's GUID, marks the
# mailbox users (mailbeacon init recognises Exchange by it). Any 16 bytes
# do; printable ones go into LDIF as they are.
for sam in ("asmith", "bob.login", "erin"):
    modify(user_dn(sam), msExchMailboxGuid=(sam + "-mailbox-guid---")[:16])

db.create_ou(f"OU=Groups,{base}")
for g in ("Mail-POP3-Disabled", "Contractors", "Mobile-Users"):
    db.newgroup(g, groupou="OU=Groups")
db.add_remove_group_members("Mail-POP3-Disabled", ["bob.login", "Contractors"])
db.add_remove_group_members("Contractors", ["dave"])
db.add_remove_group_members("Mobile-Users", ["asmith", "dave"])

# A computer account for mailbeacon to bind as with Kerberos: its key comes
# from a random password nobody knows; tests export it into a keytab
# (Server.ExportKeytab), as a realm-joined host has its /etc/krb5.keytab.
db.newcomputer("MAILBEACON", service_principal_name_list=["HOST/mailbeacon.example.test"])
db.setpassword("(sAMAccountName=MAILBEACON$)", secrets.token_urlsafe(24))
# The DC's LDAP service principal: samba_spnupdate, which the dnsupdate
# service runs, registers it on a DC that runs it; this one does not.
db.modify_ldif(f"""dn: CN=DC1,OU=Domain Controllers,{base}
changetype: modify
add: servicePrincipalName
servicePrincipalName: ldap/dc1.example.test
servicePrincipalName: ldap/dc1.example.test/example.test
servicePrincipalName: ldap/DC1
""")
print("seeded", len(users), "users")
