#!/bin/sh
# Install every package surat needs to build, test and benchmark on Debian 12.
# Idempotent: when everything is present it only runs dpkg-query and exits.
set -eu

PKGS="build-essential pkg-config clang llvm libclang-rt-14-dev
libevent-dev libssl-dev libsqlite3-dev libcrypt-dev libunbound-dev
libjansson-dev libidn2-dev libidn-dev libunistring-dev libcmocka-dev openssl ca-certificates
python3 python3-pytest python3-pytest-xdist python3-dnslib python3-dkim python3-spf
swaks libnet-ssleay-perl curl isync msmtp fetchmail nsd libpython3.11-testsuite interimap sqlite3
postfix dovecot-imapd dovecot-pop3d dovecot-lmtpd faketime"

missing=""
for p in $PKGS; do
	s=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$s" in
	*"install ok installed"*) ;;
	*) missing="$missing $p" ;;
	esac
done
[ -z "$missing" ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "deps.sh: installing:$missing" >&2
echo "postfix postfix/main_mailer_type select Local only" | $SUDO debconf-set-selections
echo "postfix postfix/mailname string localhost" | $SUDO debconf-set-selections
# Packaged daemons (postfix, dovecot, nsd) must not start on install: tests
# run their own private instances on loopback ports.
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
	$SUDO chmod 755 /usr/sbin/policy-rc.d
	cleanup_policy=1
else
	cleanup_policy=0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null
[ "$cleanup_policy" = 1 ] && $SUDO rm -f /usr/sbin/policy-rc.d
exit 0
