//! `parse` and `frame` never panic on prefixes and byte mutations of the corpora.

mod common;

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
}

/// Bytes that matter to the grammar, to mutate towards interesting inputs.
const SPECIAL: &[u8] = b"\r\n \t:;,=<>\"\\@[]%/?0\x00\xff\xc3";

#[test]
fn every_prefix() {
    for (name, bytes) in common::corpus() {
        for cut in 0..=bytes.len() {
            let prefix = &bytes[..cut];
            common::poke(prefix);
            if let Ok(Some(n)) = sipauth_sip::frame(prefix) {
                assert!(n <= cut, "{name}: framed {n} of {cut}");
            }
        }
    }
}

#[test]
fn byte_mutations() {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for (_, bytes) in common::corpus() {
        for _ in 0..300 {
            let mut m = bytes.clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(m.len());
                match rng.below(4) {
                    0 => m[at] = SPECIAL[rng.below(SPECIAL.len())],
                    1 => m.insert(at, SPECIAL[rng.below(SPECIAL.len())]),
                    2 => {
                        m.remove(at);
                    }
                    _ => m[at] ^= 1 << rng.below(8),
                }
                if m.is_empty() {
                    break;
                }
            }
            common::poke(&m);
            // Two copies back to back, as a stream would carry them.
            common::poke(&[m.as_slice(), m.as_slice()].concat());
        }
    }
}
