//! Feeds arbitrary bytes to the parsers that read a server's first flight:
//! record headers, handshake reassembly, ServerHello, Certificate and
//! ServerKeyExchange. Any panic, overflow or huge allocation is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scanner::probe::tls::wire::{
    parse_certificate, parse_record_header, parse_server_hello, parse_server_key_exchange,
    HandshakeBuffer,
};

fuzz_target!(|data: &[u8]| {
    let mut hs = HandshakeBuffer::default();
    let mut rest = data;
    while rest.len() >= 5 {
        let header = [rest[0], rest[1], rest[2], rest[3], rest[4]];
        let Ok(h) = parse_record_header(header) else { break };
        let body_len = h.len.min(rest.len() - 5);
        hs.push(&rest[5..5 + body_len]);
        rest = &rest[5 + body_len..];
        while let Ok(Some((ty, body))) = hs.next_message() {
            match ty {
                2 => {
                    let _ = parse_server_hello(&body);
                }
                11 => {
                    let _ = parse_certificate(&body);
                }
                12 => {
                    let _ = parse_server_key_exchange(&body, true);
                    let _ = parse_server_key_exchange(&body, false);
                }
                _ => {}
            }
        }
    }
    // The parsers must also hold up on raw message bodies.
    let _ = parse_server_hello(data);
    let _ = parse_certificate(data);
});
