//! The audit log's canonical encoding (`store::audit::canonical_bytes`) is
//! injective: it decodes back to exactly the fields it was made from, so two
//! different rows never encode — and so never hash — the same. Checked two
//! ways on arbitrary field tuples: a decoder written from docs/audit.md must
//! recover the input and consume every byte, and two different tuples must
//! give different bytes and different `chain_hash`es.

#![no_main]

use jit_server::store::audit::{Canonical, canonical_bytes, chain_hash};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
struct Fields {
    seq: i64,
    at: i64,
    actor: String,
    action: String,
    request_id: Option<String>,
    entitlement: Option<String>,
    data: String,
    prev_hash: String,
}

impl Fields {
    fn canonical(&self) -> Canonical<'_> {
        Canonical {
            seq: self.seq,
            at: self.at,
            actor: &self.actor,
            action: &self.action,
            request_id: self.request_id.as_deref(),
            entitlement: self.entitlement.as_deref(),
            data: &self.data,
            prev_hash: &self.prev_hash,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        canonical_bytes(&self.canonical(), &mut out);
        out
    }
}

/// Reads `<decimal length>:<bytes>\n`, or `-\n` when `optional`.
fn field<'a>(input: &mut &'a [u8], optional: bool) -> Option<Option<&'a [u8]>> {
    if optional && input.starts_with(b"-\n") {
        *input = &input[2..];
        return Some(None);
    }
    let colon = input.iter().position(|&b| b == b':')?;
    let digits = &input[..colon];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let len: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let rest = &input[colon + 1..];
    if rest.len() < len + 1 || rest[len] != b'\n' {
        return None;
    }
    let value = &rest[..len];
    *input = &rest[len + 1..];
    Some(Some(value))
}

fn text(v: &[u8]) -> Option<String> {
    String::from_utf8(v.to_vec()).ok()
}

fn decode(mut input: &[u8]) -> Option<Fields> {
    let rest = input.strip_prefix(b"jit-audit-v1\n")?;
    input = rest;
    let seq = text(field(&mut input, false)??)?.parse().ok()?;
    let prev_hash = text(field(&mut input, false)??)?;
    let at = text(field(&mut input, false)??)?.parse().ok()?;
    let actor = text(field(&mut input, false)??)?;
    let action = text(field(&mut input, false)??)?;
    let request_id = match field(&mut input, true)? {
        Some(v) => Some(text(v)?),
        None => None,
    };
    let entitlement = match field(&mut input, true)? {
        Some(v) => Some(text(v)?),
        None => None,
    };
    let data = text(field(&mut input, false)??)?;
    if !input.is_empty() {
        return None;
    }
    Some(Fields {
        seq,
        at,
        actor,
        action,
        request_id,
        entitlement,
        data,
        prev_hash,
    })
}

fuzz_target!(|pair: (Fields, Fields)| {
    let (a, b) = pair;
    let ea = a.encode();
    assert_eq!(
        decode(&ea).as_ref(),
        Some(&a),
        "encoding does not decode back"
    );
    let ha = chain_hash(&a.canonical());
    assert_eq!(ha.len(), 64);
    assert!(ha.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
    let eb = b.encode();
    let hb = chain_hash(&b.canonical());
    if a == b {
        assert_eq!(ea, eb);
        assert_eq!(ha, hb);
    } else {
        assert_ne!(ea, eb, "different rows, same encoding: {a:?} {b:?}");
        assert_ne!(ha, hb, "different rows, same hash: {a:?} {b:?}");
    }
});
