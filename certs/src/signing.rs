//! Ed25519 keys that seal audit segments and sign scan verdicts (see issue 5/8).
