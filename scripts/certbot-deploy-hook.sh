#!/bin/sh
# certbot deploy hook for cryptshare-gateway: install a renewed certificate where the gateway
# reads it ([server.tls] cert and key) and reload the gateway, which then uses it for every
# connection accepted after the reload (open sessions keep the one they started with).
#
# Why a copy: certbot keeps its keys under /etc/letsencrypt/{live,archive}, readable by root
# only, while the gateway runs as the unprivileged user cryptshare-gateway. The hook copies the
# chain and the key next to gateway.toml, owned root:cryptshare-gateway, key mode 0640.
#
# Use it for the gateway's certificate only (certbot stores the hook in that lineage's
# renewal/<name>.conf, so other certificates on the host do not trigger it):
#
#     certbot certonly --standalone -d gateway.example.org \
#         --deploy-hook /usr/share/cryptshare-gateway/certbot-deploy-hook.sh
#
# or, for an existing certificate:
#
#     certbot reconfigure --cert-name gateway.example.org \
#         --deploy-hook /usr/share/cryptshare-gateway/certbot-deploy-hook.sh
#
# (From a source checkout the script is scripts/certbot-deploy-hook.sh.) If you put it into
# /etc/letsencrypt/renewal-hooks/deploy/ instead, it runs after every renewal on the host: then
# set CSGW_CERT_NAME (below) so that it acts only for the gateway's certificate.
#
# certbot runs deploy hooks as root after a successful issuance or renewal, with RENEWED_LINEAGE
# set to the live directory (e.g. /etc/letsencrypt/live/gateway.example.org). Run it by hand
# the same way to test it:
#
#     RENEWED_LINEAGE=/etc/letsencrypt/live/gateway.example.org \
#         /usr/share/cryptshare-gateway/certbot-deploy-hook.sh
#
# Settings (environment; the defaults match the shipped gateway.toml):
#   CSGW_TLS_CERT   where [server.tls] cert points  (default /etc/cryptshare-gateway/cert.pem)
#   CSGW_TLS_KEY    where [server.tls] key points   (default /etc/cryptshare-gateway/key.pem)
#   CSGW_GROUP      the service's group             (default cryptshare-gateway)
#   CSGW_SERVICE    the systemd unit                (default cryptshare-gateway.service)
#   CSGW_CERT_NAME  act only when RENEWED_LINEAGE ends in /<this name> (default: always act)
#
# The reload goes through the unit's ExecReload, which runs `cryptshare-gateway check-config`
# first: if the new files are refused, the reload fails, this hook exits non-zero (certbot
# reports it) and the running gateway keeps the certificate it has.

set -eu

cert=${CSGW_TLS_CERT:-/etc/cryptshare-gateway/cert.pem}
key=${CSGW_TLS_KEY:-/etc/cryptshare-gateway/key.pem}
group=${CSGW_GROUP:-cryptshare-gateway}
service=${CSGW_SERVICE:-cryptshare-gateway.service}
only=${CSGW_CERT_NAME:-}

fail() {
    echo "certbot-deploy-hook (cryptshare-gateway): $*" >&2
    exit 1
}

[ -n "${RENEWED_LINEAGE:-}" ] || fail "RENEWED_LINEAGE is not set (run by certbot as a deploy hook)"
if [ -n "$only" ] && [ "${RENEWED_LINEAGE##*/}" != "$only" ]; then
    exit 0
fi
[ -r "$RENEWED_LINEAGE/fullchain.pem" ] || fail "$RENEWED_LINEAGE/fullchain.pem: not readable"
[ -r "$RENEWED_LINEAGE/privkey.pem" ] || fail "$RENEWED_LINEAGE/privkey.pem: not readable"
getent group "$group" >/dev/null ||
    fail "group $group does not exist (create the service user first: systemd-sysusers)"

# Write both files under temporary names in their target directories, then rename each into
# place: the gateway (and check-config) never sees a half-written file. The chain goes first
# (leaf first, as [server.tls] cert expects: fullchain.pem is exactly that).
tmp_cert="$cert.certbot.$$"
tmp_key="$key.certbot.$$"
trap 'rm -f "$tmp_cert" "$tmp_key"' EXIT
install -m 0644 -o root -g "$group" "$RENEWED_LINEAGE/fullchain.pem" "$tmp_cert"
install -m 0640 -o root -g "$group" "$RENEWED_LINEAGE/privkey.pem" "$tmp_key"
mv -f "$tmp_cert" "$cert"
mv -f "$tmp_key" "$key"
trap - EXIT

# Reload only a running gateway; a stopped one reads the new files when it starts.
if systemctl is-active --quiet "$service"; then
    systemctl reload "$service" || fail "systemctl reload $service failed; see: journalctl -u $service -n 20"
fi
