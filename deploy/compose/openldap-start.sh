#!/bin/sh
# Starts the compose example's OpenLDAP: writes slapd.conf, loads the demo
# directory (ldapsource/embedded/demo/demo.ldif, the one `serve --demo`
# serves) on first start, and runs slapd in the foreground. The defaults
# are the image's paths; the tests run it against Debian's slapd with
# their own.
set -eu
: "${DATA_DIR:=/var/lib/ldap}"
: "${SCHEMA_DIR:=/etc/ldap/schema}"
: "${MODULE_DIR:=/usr/lib/ldap}"
: "${SEED_DIR:=/etc/ldap/mailbeacon}"
: "${LISTEN:=ldap://:1389/}"

conf=$DATA_DIR/slapd.conf
mkdir -p "$DATA_DIR/db"
{
	for s in core cosine inetorgperson nis misc; do
		echo "include $SCHEMA_DIR/$s.schema"
	done
	echo "include $SEED_DIR/mailbeacon.schema"
	echo "pidfile $DATA_DIR/slapd.pid"
	echo "argsfile $DATA_DIR/slapd.args"
	echo "modulepath $MODULE_DIR"
	echo "moduleload back_mdb"
	cat <<CONF
database mdb
maxsize 104857600
suffix "dc=example,dc=com"
directory $DATA_DIR/db
index objectClass,uid,mail,shadowAddress eq
# Binds check passwords; the service account reads the people, nothing more.
access to attrs=userPassword
    by anonymous auth
    by * none
access to dn.subtree="ou=people,dc=example,dc=com"
    by dn.exact="cn=mailbeacon,ou=services,dc=example,dc=com" read
    by * none
access to *
    by dn.exact="cn=mailbeacon,ou=services,dc=example,dc=com" read
    by * none
CONF
} >"$conf"
if [ ! -e "$DATA_DIR/db/data.mdb" ]; then
	slapadd -q -f "$conf" -l "$SEED_DIR/demo.ldif"
fi
exec slapd -d 0 -f "$conf" -h "$LISTEN"
