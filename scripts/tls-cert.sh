#!/usr/bin/env bash
# Throwaway TLS certificates with openssl, for the local broker (scripts/kafka-local.sh) and
# the tests (a Matomo simulator over HTTPS, an "unknown" CA). Nothing is downloaded; nothing
# made here should ever be trusted outside a test.
#
# Usage:
#   tls-cert.sh ca PREFIX CN
#       a CA: PREFIX.pem (certificate) and PREFIX.key (unencrypted key)
#   tls-cert.sh server|client PREFIX CA_PREFIX CN [SAN] [KEY_PASSWORD]
#       a certificate signed by the CA at CA_PREFIX.pem/.key: PREFIX.pem and PREFIX.key.
#       SAN: subjectAltName value, e.g. DNS:localhost,IP:127.0.0.1 (server: required).
#       KEY_PASSWORD: encrypts PREFIX.key (PKCS#8, AES-256); unencrypted without it.
#
# Certificates are RSA 2048, SHA-256; a CA lasts 10 years, a leaf 825 days. Leaves carry
# the extensions strict verifiers want (SKI, AKI, key usages, no CA flag).
set -euo pipefail

die() {
    echo "tls-cert: $*" >&2
    exit 2
}

usage="usage: $0 ca PREFIX CN | server|client PREFIX CA_PREFIX CN [SAN] [KEY_PASSWORD]"
kind=${1:-}
prefix=${2:-}
[[ -n $kind && -n $prefix && -n ${3:-} ]] || die "$usage"
command -v openssl >/dev/null || die "openssl not found"
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# openssl, quiet unless it fails (key generation prints progress dots on stderr).
ossl() {
    openssl "$@" 2>"$work/log" || {
        cat "$work/log" >&2
        die "openssl $1 failed"
    }
}

case $kind in
ca)
    cn=$3
    ossl req -x509 -newkey rsa:2048 -nodes -keyout "$prefix.key" -out "$prefix.pem" \
        -days 3650 -sha256 -subj "/CN=$cn" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash"
    ;;
server | client)
    ca=$3
    cn=${4:-}
    [[ -n $cn ]] || die "$usage"
    san=${5:-}
    password=${6:-}
    [[ $kind == client || -n $san ]] || die "a server certificate needs a SAN"
    [[ -s $ca.pem && -s $ca.key ]] || die "no CA at $ca.pem / $ca.key"
    usage=serverAuth
    [[ $kind == client ]] && usage=clientAuth
    key_args=(-nodes)
    [[ -n $password ]] && key_args=(-passout "pass:$password")
    ossl req -new -newkey rsa:2048 "${key_args[@]}" -keyout "$prefix.key" \
        -out "$work/req.csr" -subj "/CN=$cn"
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$usage"
        echo "subjectKeyIdentifier=hash"
        echo "authorityKeyIdentifier=keyid"
        [[ -n $san ]] && echo "subjectAltName=$san"
    } >"$work/ext.cnf"
    ossl x509 -req -in "$work/req.csr" -CA "$ca.pem" -CAkey "$ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days 825 -sha256 \
        -extfile "$work/ext.cnf" -out "$prefix.pem"
    ;;
*)
    die "unknown kind $kind (ca, server or client)"
    ;;
esac
chmod 644 "$prefix.pem"
