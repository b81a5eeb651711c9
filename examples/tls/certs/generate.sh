#!/bin/sh
# TEST-ONLY certificates for examples/tls: a throwaway CA and two server certificates.
# The private keys are committed on purpose; never use them for anything real.
# Regenerate (e.g. to see a rotation picked up by a running `novaedge run`): ./generate.sh
set -eu
cd "$(dirname "$0")"
days=3650
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
    -subj "/O=NovaEdge example (TEST ONLY)/CN=NovaEdge test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout test-ca.key -out test-ca.crt 2>/dev/null
for name in shop api; do
    host="$name.example.test"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/O=NovaEdge example (TEST ONLY)/CN=$host" \
        -keyout "$name.key" -out "$name.csr" 2>/dev/null
    printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$host" > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA test-ca.crt -CAkey test-ca.key -CAcreateserial \
        -days "$days" -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
done
# The CA key is not needed once both certificates are signed.
rm -f test-ca.srl test-ca.key
