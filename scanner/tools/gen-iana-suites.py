#!/usr/bin/env python3
"""Writes scanner/src/probe/tls/iana_suites.txt: the IANA TLS cipher suite
registry (code point, IANA name) with OpenSSL's name where the local OpenSSL
knows the suite. The IANA names are written out below by family (the
registry's own structure); OpenSSL's `-stdname` output is used as a cross-check
and the run fails if the two ever disagree on a name.

Run from the repository root: python3 scanner/tools/gen-iana-suites.py
"""
import re
import subprocess
import sys

S = {}


def add(code, name):
    if code in S and S[code] != name:
        sys.exit(f"duplicate {code:#06x}: {S[code]} vs {name}")
    S[code] = name


def run(start, kx_list, tail):
    for i, kx in enumerate(kx_list):
        add(start + i, f"TLS_{kx}_WITH_{tail}")


# 0x0000-0x002E: the original SSL/TLS suites, export, Kerberos, PSK-NULL.
add(0x0000, "TLS_NULL_WITH_NULL_NULL")
for c, n in [
    (0x01, "RSA_WITH_NULL_MD5"), (0x02, "RSA_WITH_NULL_SHA"),
    (0x03, "RSA_EXPORT_WITH_RC4_40_MD5"), (0x04, "RSA_WITH_RC4_128_MD5"),
    (0x05, "RSA_WITH_RC4_128_SHA"), (0x06, "RSA_EXPORT_WITH_RC2_CBC_40_MD5"),
    (0x07, "RSA_WITH_IDEA_CBC_SHA"), (0x08, "RSA_EXPORT_WITH_DES40_CBC_SHA"),
    (0x09, "RSA_WITH_DES_CBC_SHA"), (0x0A, "RSA_WITH_3DES_EDE_CBC_SHA"),
    (0x0B, "DH_DSS_EXPORT_WITH_DES40_CBC_SHA"), (0x0C, "DH_DSS_WITH_DES_CBC_SHA"),
    (0x0D, "DH_DSS_WITH_3DES_EDE_CBC_SHA"), (0x0E, "DH_RSA_EXPORT_WITH_DES40_CBC_SHA"),
    (0x0F, "DH_RSA_WITH_DES_CBC_SHA"), (0x10, "DH_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0x11, "DHE_DSS_EXPORT_WITH_DES40_CBC_SHA"), (0x12, "DHE_DSS_WITH_DES_CBC_SHA"),
    (0x13, "DHE_DSS_WITH_3DES_EDE_CBC_SHA"), (0x14, "DHE_RSA_EXPORT_WITH_DES40_CBC_SHA"),
    (0x15, "DHE_RSA_WITH_DES_CBC_SHA"), (0x16, "DHE_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0x17, "DH_anon_EXPORT_WITH_RC4_40_MD5"), (0x18, "DH_anon_WITH_RC4_128_MD5"),
    (0x19, "DH_anon_EXPORT_WITH_DES40_CBC_SHA"), (0x1A, "DH_anon_WITH_DES_CBC_SHA"),
    (0x1B, "DH_anon_WITH_3DES_EDE_CBC_SHA"),
    (0x1E, "KRB5_WITH_DES_CBC_SHA"), (0x1F, "KRB5_WITH_3DES_EDE_CBC_SHA"),
    (0x20, "KRB5_WITH_RC4_128_SHA"), (0x21, "KRB5_WITH_IDEA_CBC_SHA"),
    (0x22, "KRB5_WITH_DES_CBC_MD5"), (0x23, "KRB5_WITH_3DES_EDE_CBC_MD5"),
    (0x24, "KRB5_WITH_RC4_128_MD5"), (0x25, "KRB5_WITH_IDEA_CBC_MD5"),
    (0x26, "KRB5_EXPORT_WITH_DES_CBC_40_SHA"), (0x27, "KRB5_EXPORT_WITH_RC2_CBC_40_SHA"),
    (0x28, "KRB5_EXPORT_WITH_RC4_40_SHA"), (0x29, "KRB5_EXPORT_WITH_DES_CBC_40_MD5"),
    (0x2A, "KRB5_EXPORT_WITH_RC2_CBC_40_MD5"), (0x2B, "KRB5_EXPORT_WITH_RC4_40_MD5"),
    (0x2C, "PSK_WITH_NULL_SHA"), (0x2D, "DHE_PSK_WITH_NULL_SHA"), (0x2E, "RSA_PSK_WITH_NULL_SHA"),
]:
    add(c, "TLS_" + n)

DH6 = ["RSA", "DH_DSS", "DH_RSA", "DHE_DSS", "DHE_RSA", "DH_anon"]
run(0x2F, DH6, "AES_128_CBC_SHA")
run(0x35, DH6, "AES_256_CBC_SHA")
add(0x3B, "TLS_RSA_WITH_NULL_SHA256")
add(0x3C, "TLS_RSA_WITH_AES_128_CBC_SHA256")
add(0x3D, "TLS_RSA_WITH_AES_256_CBC_SHA256")
run(0x3E, ["DH_DSS", "DH_RSA", "DHE_DSS"], "AES_128_CBC_SHA256")
run(0x41, DH6, "CAMELLIA_128_CBC_SHA")
add(0x67, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256")
run(0x68, ["DH_DSS", "DH_RSA", "DHE_DSS", "DHE_RSA"], "AES_256_CBC_SHA256")
add(0x6C, "TLS_DH_anon_WITH_AES_128_CBC_SHA256")
add(0x6D, "TLS_DH_anon_WITH_AES_256_CBC_SHA256")
run(0x84, DH6, "CAMELLIA_256_CBC_SHA")
for base, kx in [(0x8A, "PSK"), (0x8E, "DHE_PSK"), (0x92, "RSA_PSK")]:
    for i, t in enumerate(["RC4_128_SHA", "3DES_EDE_CBC_SHA", "AES_128_CBC_SHA", "AES_256_CBC_SHA"]):
        add(base + i, f"TLS_{kx}_WITH_{t}")
run(0x96, DH6, "SEED_CBC_SHA")
for base, kx in [(0x9C, "RSA"), (0x9E, "DHE_RSA"), (0xA0, "DH_RSA"), (0xA2, "DHE_DSS"),
                 (0xA4, "DH_DSS"), (0xA6, "DH_anon"), (0xA8, "PSK"), (0xAA, "DHE_PSK"),
                 (0xAC, "RSA_PSK")]:
    add(base, f"TLS_{kx}_WITH_AES_128_GCM_SHA256")
    add(base + 1, f"TLS_{kx}_WITH_AES_256_GCM_SHA384")
for base, kx in [(0xAE, "PSK"), (0xB2, "DHE_PSK"), (0xB6, "RSA_PSK")]:
    for i, t in enumerate(["AES_128_CBC_SHA256", "AES_256_CBC_SHA384", "NULL_SHA256", "NULL_SHA384"]):
        add(base + i, f"TLS_{kx}_WITH_{t}")
run(0xBA, DH6, "CAMELLIA_128_CBC_SHA256")
run(0xC0, DH6, "CAMELLIA_256_CBC_SHA256")
add(0xC6, "TLS_SM4_GCM_SM3")
add(0xC7, "TLS_SM4_CCM_SM3")

# TLS 1.3 (RFC 8446).
for c, n in [(0x1301, "AES_128_GCM_SHA256"), (0x1302, "AES_256_GCM_SHA384"),
             (0x1303, "CHACHA20_POLY1305_SHA256"), (0x1304, "AES_128_CCM_SHA256"),
             (0x1305, "AES_128_CCM_8_SHA256")]:
    add(c, "TLS_" + n)

# 0xC001-: ECC (RFC 8422), SRP, ECDHE-PSK, ARIA, Camellia, CCM, ECCPWD.
for base, kx in [(0xC001, "ECDH_ECDSA"), (0xC006, "ECDHE_ECDSA"), (0xC00B, "ECDH_RSA"),
                 (0xC010, "ECDHE_RSA"), (0xC015, "ECDH_anon")]:
    for i, t in enumerate(["NULL_SHA", "RC4_128_SHA", "3DES_EDE_CBC_SHA", "AES_128_CBC_SHA",
                           "AES_256_CBC_SHA"]):
        add(base + i, f"TLS_{kx}_WITH_{t}")
SRP3 = ["SRP_SHA", "SRP_SHA_RSA", "SRP_SHA_DSS"]
run(0xC01A, SRP3, "3DES_EDE_CBC_SHA")
run(0xC01D, SRP3, "AES_128_CBC_SHA")
run(0xC020, SRP3, "AES_256_CBC_SHA")
EC4 = ["ECDHE_ECDSA", "ECDH_ECDSA", "ECDHE_RSA", "ECDH_RSA"]
for i, kx in enumerate(EC4):
    add(0xC023 + 2 * i, f"TLS_{kx}_WITH_AES_128_CBC_SHA256")
    add(0xC024 + 2 * i, f"TLS_{kx}_WITH_AES_256_CBC_SHA384")
    add(0xC02B + 2 * i, f"TLS_{kx}_WITH_AES_128_GCM_SHA256")
    add(0xC02C + 2 * i, f"TLS_{kx}_WITH_AES_256_GCM_SHA384")
for i, t in enumerate(["RC4_128_SHA", "3DES_EDE_CBC_SHA", "AES_128_CBC_SHA", "AES_256_CBC_SHA",
                       "AES_128_CBC_SHA256", "AES_256_CBC_SHA384", "NULL_SHA", "NULL_SHA256",
                       "NULL_SHA384"]):
    add(0xC033 + i, f"TLS_ECDHE_PSK_WITH_{t}")
ARIA_CBC = ["RSA", "DH_DSS", "DH_RSA", "DHE_DSS", "DHE_RSA", "DH_anon", "ECDHE_ECDSA",
            "ECDH_ECDSA", "ECDHE_RSA", "ECDH_RSA"]
for i, kx in enumerate(ARIA_CBC):
    add(0xC03C + 2 * i, f"TLS_{kx}_WITH_ARIA_128_CBC_SHA256")
    add(0xC03D + 2 * i, f"TLS_{kx}_WITH_ARIA_256_CBC_SHA384")
ARIA_GCM = ["RSA", "DHE_RSA", "DH_RSA", "DHE_DSS", "DH_DSS", "DH_anon", "ECDHE_ECDSA",
            "ECDH_ECDSA", "ECDHE_RSA", "ECDH_RSA"]
for i, kx in enumerate(ARIA_GCM):
    add(0xC050 + 2 * i, f"TLS_{kx}_WITH_ARIA_128_GCM_SHA256")
    add(0xC051 + 2 * i, f"TLS_{kx}_WITH_ARIA_256_GCM_SHA384")
for i, kx in enumerate(["PSK", "DHE_PSK", "RSA_PSK"]):
    add(0xC064 + 2 * i, f"TLS_{kx}_WITH_ARIA_128_CBC_SHA256")
    add(0xC065 + 2 * i, f"TLS_{kx}_WITH_ARIA_256_CBC_SHA384")
    add(0xC06A + 2 * i, f"TLS_{kx}_WITH_ARIA_128_GCM_SHA256")
    add(0xC06B + 2 * i, f"TLS_{kx}_WITH_ARIA_256_GCM_SHA384")
add(0xC070, "TLS_ECDHE_PSK_WITH_ARIA_128_CBC_SHA256")
add(0xC071, "TLS_ECDHE_PSK_WITH_ARIA_256_CBC_SHA384")
for i, kx in enumerate(EC4):
    add(0xC072 + 2 * i, f"TLS_{kx}_WITH_CAMELLIA_128_CBC_SHA256")
    add(0xC073 + 2 * i, f"TLS_{kx}_WITH_CAMELLIA_256_CBC_SHA384")
for i, kx in enumerate(ARIA_GCM):
    add(0xC07A + 2 * i, f"TLS_{kx}_WITH_CAMELLIA_128_GCM_SHA256")
    add(0xC07B + 2 * i, f"TLS_{kx}_WITH_CAMELLIA_256_GCM_SHA384")
for i, kx in enumerate(["PSK", "DHE_PSK", "RSA_PSK"]):
    add(0xC08E + 2 * i, f"TLS_{kx}_WITH_CAMELLIA_128_GCM_SHA256")
    add(0xC08F + 2 * i, f"TLS_{kx}_WITH_CAMELLIA_256_GCM_SHA384")
for i, kx in enumerate(["PSK", "DHE_PSK", "RSA_PSK", "ECDHE_PSK"]):
    add(0xC094 + 2 * i, f"TLS_{kx}_WITH_CAMELLIA_128_CBC_SHA256")
    add(0xC095 + 2 * i, f"TLS_{kx}_WITH_CAMELLIA_256_CBC_SHA384")
for c, n in [(0xC09C, "RSA_WITH_AES_128_CCM"), (0xC09D, "RSA_WITH_AES_256_CCM"),
             (0xC09E, "DHE_RSA_WITH_AES_128_CCM"), (0xC09F, "DHE_RSA_WITH_AES_256_CCM"),
             (0xC0A0, "RSA_WITH_AES_128_CCM_8"), (0xC0A1, "RSA_WITH_AES_256_CCM_8"),
             (0xC0A2, "DHE_RSA_WITH_AES_128_CCM_8"), (0xC0A3, "DHE_RSA_WITH_AES_256_CCM_8"),
             (0xC0A4, "PSK_WITH_AES_128_CCM"), (0xC0A5, "PSK_WITH_AES_256_CCM"),
             (0xC0A6, "DHE_PSK_WITH_AES_128_CCM"), (0xC0A7, "DHE_PSK_WITH_AES_256_CCM"),
             (0xC0A8, "PSK_WITH_AES_128_CCM_8"), (0xC0A9, "PSK_WITH_AES_256_CCM_8"),
             (0xC0AA, "PSK_DHE_WITH_AES_128_CCM_8"), (0xC0AB, "PSK_DHE_WITH_AES_256_CCM_8"),
             (0xC0AC, "ECDHE_ECDSA_WITH_AES_128_CCM"), (0xC0AD, "ECDHE_ECDSA_WITH_AES_256_CCM"),
             (0xC0AE, "ECDHE_ECDSA_WITH_AES_128_CCM_8"), (0xC0AF, "ECDHE_ECDSA_WITH_AES_256_CCM_8"),
             (0xC0B0, "ECCPWD_WITH_AES_128_GCM_SHA256"), (0xC0B1, "ECCPWD_WITH_AES_256_GCM_SHA384"),
             (0xC0B2, "ECCPWD_WITH_AES_128_CCM_SHA256"), (0xC0B3, "ECCPWD_WITH_AES_256_CCM_SHA384"),
             (0xC0B4, "SHA256_SHA256"), (0xC0B5, "SHA384_SHA384"),
             (0xC100, "GOSTR341112_256_WITH_KUZNYECHIK_CTR_OMAC"),
             (0xC101, "GOSTR341112_256_WITH_MAGMA_CTR_OMAC"),
             (0xC102, "GOSTR341112_256_WITH_28147_CNT_IMIT"),
             (0xC103, "GOSTR341112_256_WITH_KUZNYECHIK_MGM_L"),
             (0xC104, "GOSTR341112_256_WITH_MAGMA_MGM_L"),
             (0xC105, "GOSTR341112_256_WITH_KUZNYECHIK_MGM_S"),
             (0xC106, "GOSTR341112_256_WITH_MAGMA_MGM_S")]:
    add(c, "TLS_" + n)
run(0xCCA8, ["ECDHE_RSA", "ECDHE_ECDSA", "DHE_RSA", "PSK", "ECDHE_PSK", "DHE_PSK", "RSA_PSK"],
    "CHACHA20_POLY1305_SHA256")
for c, n in [(0xD001, "AES_128_GCM_SHA256"), (0xD002, "AES_256_GCM_SHA384"),
             (0xD003, "AES_128_CCM_8_SHA256"), (0xD005, "AES_128_CCM_SHA256")]:
    add(c, "TLS_ECDHE_PSK_WITH_" + n)

out = subprocess.run(["openssl", "ciphers", "-V", "-stdname", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"],
                     capture_output=True, text=True, check=True).stdout
ossl = {}
bad = 0
for line in out.splitlines():
    m = re.match(r"\s*0x(..),0x(..) - (\S+)\s+- (\S+)", line)
    if not m:
        continue
    code, std, name = int(m[1] + m[2], 16), m[3], m[4]
    if S.get(code) != std:
        print(f"mismatch {code:#06x}: ours {S.get(code)} openssl {std}", file=sys.stderr)
        bad += 1
    if name != std:
        ossl[code] = name
if bad:
    sys.exit(1)
with open("scanner/src/probe/tls/iana_suites.txt", "w") as f:
    f.write("# IANA TLS cipher suites: code point, IANA name, OpenSSL name ('-' if none).\n")
    f.write("# Generated by scanner/tools/gen-iana-suites.py; do not edit by hand.\n")
    for code in sorted(S):
        f.write(f"{code:04X} {S[code]} {ossl.get(code, '-')}\n")
print(f"{len(S)} suites, {len(ossl)} with OpenSSL names")
