#!/bin/sh
# Start a development instance of surat in the foreground: data in ./var,
# 127.0.0.1 on unprivileged ports, a self-signed certificate and a demo
# account made on first start (its password is printed once).
set -eu
cd "$(dirname "$0")/.."
VAR=$PWD/var
BIN=$PWD/build/surat
CONF=$VAR/surat.conf
mkdir -p "$VAR/tls"

if [ ! -f "$VAR/tls/cert.pem" ]; then
	openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=localhost" \
		-addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
		-keyout "$VAR/tls/key.pem" -out "$VAR/tls/cert.pem" 2>/dev/null
	chmod 600 "$VAR/tls/key.pem"
	echo "made a self-signed certificate: $VAR/tls/cert.pem"
fi

if [ ! -f "$CONF" ]; then
	cat >"$CONF" <<CONF
# surat development instance (made by 'make run'); see docs/config.md
hostname = localhost
data_dir = $VAR/data
listen.smtp = 127.0.0.1:2525
listen.submission = 127.0.0.1:2587
listen.submissions = 127.0.0.1:2465
listen.imap = 127.0.0.1:2143
listen.imaps = 127.0.0.1:2993
listen.pop3 = 127.0.0.1:2110
listen.pop3s = 127.0.0.1:2995
tls.cert = $VAR/tls/cert.pem
tls.key = $VAR/tls/key.pem
log.level = info
CONF
fi

if ! "$BIN" -c "$CONF" domain list | grep -qx example.test; then
	"$BIN" -c "$CONF" domain add example.test
fi
if ! "$BIN" -c "$CONF" user list example.test | grep -q '^demo@example.test '; then
	PW=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
	printf '%s\n' "$PW" | "$BIN" -c "$CONF" user add demo@example.test
	echo "demo account: demo@example.test  password: $PW  (shown once; change it with"
	echo "  build/surat -c $CONF user passwd demo@example.test)"
fi

cat <<INFO
surat development instance, data in $VAR
  SMTP (MX)              127.0.0.1:2525   STARTTLS
  submission             127.0.0.1:2587   STARTTLS, then AUTH PLAIN/LOGIN
  submissions            127.0.0.1:2465   implicit TLS, AUTH PLAIN/LOGIN
  IMAP                   127.0.0.1:2143   STARTTLS, then LOGIN/AUTHENTICATE
  IMAPS                  127.0.0.1:2993   implicit TLS
  POP3                   127.0.0.1:2110   STLS, then USER/PASS or AUTH PLAIN
  POP3S                  127.0.0.1:2995   implicit TLS
Stop with Ctrl-C.
INFO
exec "$BIN" -c "$CONF" serve
