//! Header names: compact forms and which headers carry comma-separated lists.

/// Long name, compact form (if any), and whether the header's grammar is a
/// comma-separated list that [`crate::Message::headers`] splits.
const KNOWN: &[(&str, Option<u8>, bool)] = &[
    ("Via", Some(b'v'), true),
    ("From", Some(b'f'), false),
    ("To", Some(b't'), false),
    ("Call-ID", Some(b'i'), false),
    ("CSeq", None, false),
    ("Contact", Some(b'm'), true),
    ("Content-Length", Some(b'l'), false),
    ("Content-Type", Some(b'c'), false),
    ("Content-Encoding", Some(b'e'), true),
    ("Subject", Some(b's'), false),
    ("Supported", Some(b'k'), true),
    ("Max-Forwards", None, false),
    ("Route", None, true),
    ("Record-Route", None, true),
    ("Allow", None, true),
    ("Require", None, true),
    ("Proxy-Require", None, true),
    ("Unsupported", None, true),
    ("Accept", None, true),
    ("Accept-Encoding", None, true),
    ("Accept-Language", None, true),
    ("Alert-Info", None, true),
    ("Call-Info", None, true),
    ("Error-Info", None, true),
    ("Content-Language", None, true),
    ("In-Reply-To", None, true),
    ("Warning", None, true),
    ("Path", None, true),
    ("Service-Route", None, true),
    ("Privacy", None, true),
    ("P-Asserted-Identity", None, true),
    ("P-Preferred-Identity", None, true),
    ("Security-Client", None, true),
    ("Security-Server", None, true),
    ("Security-Verify", None, true),
    ("Reason", None, true),
    ("Authorization", None, false),
    ("Proxy-Authorization", None, false),
    ("WWW-Authenticate", None, false),
    ("Proxy-Authenticate", None, false),
    ("Authentication-Info", None, false),
    ("Event", Some(b'o'), false),
    ("Allow-Events", Some(b'u'), true),
    ("Refer-To", Some(b'r'), false),
    ("Referred-By", Some(b'b'), false),
    ("Accept-Contact", Some(b'a'), true),
    ("Reject-Contact", Some(b'j'), true),
    ("Request-Disposition", Some(b'd'), true),
    ("Identity", Some(b'y'), false),
    ("Session-Expires", Some(b'x'), false),
];

/// For each letter, a bit set of the `KNOWN` entries whose long name starts with it.
static BY_FIRST_LETTER: [u64; 26] = by_first_letter();

const fn by_first_letter() -> [u64; 26] {
    assert!(KNOWN.len() <= 64);
    let mut table = [0u64; 26];
    let mut i = 0;
    while i < KNOWN.len() {
        let first = KNOWN[i].0.as_bytes()[0].to_ascii_lowercase();
        table[(first - b'a') as usize] |= 1 << i;
        i += 1;
    }
    table
}

/// Index into the table of known headers, or `UNKNOWN`.
pub(crate) type Kind = u8;
pub(crate) const UNKNOWN: Kind = u8::MAX;

macro_rules! kind_of {
    ($($name:ident = $idx:literal),* $(,)?) => { $(pub(crate) const $name: Kind = $idx;)* };
}
kind_of! {
    VIA = 0, FROM = 1, TO = 2, CALL_ID = 3, CSEQ = 4, CONTACT = 5, CONTENT_LENGTH = 6,
    CONTENT_TYPE = 7, MAX_FORWARDS = 11,
}
pub(crate) const DATE_NAME: &str = "Date";

/// Classifies a header name (long or compact, any case).
pub(crate) fn kind(name: &str) -> Kind {
    if let &[c] = name.as_bytes() {
        let c = c.to_ascii_lowercase();
        return KNOWN
            .iter()
            .position(|&(_, compact, _)| compact == Some(c))
            .map_or(UNKNOWN, index_to_kind);
    }
    let Some(&first) = name.as_bytes().first() else {
        return UNKNOWN;
    };
    if !first.is_ascii_alphabetic() {
        return UNKNOWN;
    }
    // Only the known names starting with the same letter are compared.
    let mut candidates = BY_FIRST_LETTER[usize::from(first.to_ascii_lowercase() - b'a')];
    while candidates != 0 {
        let i = candidates.trailing_zeros() as usize;
        candidates &= candidates - 1;
        if let Some(&(long, _, _)) = KNOWN.get(i)
            && long.len() == name.len()
            && long.eq_ignore_ascii_case(name)
        {
            return index_to_kind(i);
        }
    }
    UNKNOWN
}

fn index_to_kind(i: usize) -> Kind {
    Kind::try_from(i).unwrap_or(UNKNOWN)
}

/// Whether values of this header are comma-separated lists.
pub(crate) fn is_list(kind: Kind) -> bool {
    KNOWN
        .get(usize::from(kind))
        .is_some_and(|&(_, _, list)| list)
}

/// The long form of a known header.
pub(crate) fn long_name(kind: Kind) -> Option<&'static str> {
    KNOWN.get(usize::from(kind)).map(|&(long, _, _)| long)
}

/// The long form of a header name if it is a known compact form or a known
/// long form in another case; otherwise the name as given.
#[must_use]
pub fn canonical_name(name: &str) -> &str {
    long_name(kind(name)).unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_indices_match_constants() {
        for (k, n) in [
            (VIA, "Via"),
            (FROM, "From"),
            (TO, "To"),
            (CALL_ID, "Call-ID"),
            (CSEQ, "CSeq"),
            (CONTACT, "Contact"),
            (CONTENT_LENGTH, "Content-Length"),
            (CONTENT_TYPE, "Content-Type"),
            (MAX_FORWARDS, "Max-Forwards"),
        ] {
            assert_eq!(long_name(k), Some(n));
        }
    }

    #[test]
    fn compact_and_long_forms() {
        assert_eq!(kind("v"), VIA);
        assert_eq!(kind("V"), VIA);
        assert_eq!(kind("vIA"), VIA);
        assert_eq!(kind("i"), CALL_ID);
        assert_eq!(kind("l"), CONTENT_LENGTH);
        assert_eq!(kind("X-Foo"), UNKNOWN);
        assert_eq!(kind("q"), UNKNOWN);
        assert_eq!(canonical_name("m"), "Contact");
        assert_eq!(canonical_name("X-Foo"), "X-Foo");
        assert!(is_list(VIA));
        assert!(!is_list(kind("WWW-Authenticate")));
        assert!(!is_list(UNKNOWN));
    }
}
