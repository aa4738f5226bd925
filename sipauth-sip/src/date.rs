//! The SIP-date of the Date header (RFC 3261 20.17: RFC 1123 form, GMT only).

const WKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn digits(s: &[u8], max: u32) -> bool {
    s.iter().all(u8::is_ascii_digit)
        && s.iter().fold(0u32, |n, &b| n * 10 + u32::from(b - b'0')) <= max
}

/// `wkday "," SP 2DIGIT SP month SP 4DIGIT SP 2DIGIT ":" 2DIGIT ":" 2DIGIT SP "GMT"`.
pub(crate) fn is_sip_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 29 || !s.is_char_boundary(3) || !s.is_char_boundary(11) || !s.is_char_boundary(14)
    {
        return false;
    }
    WKDAYS.contains(&&s[..3])
        && &b[3..5] == b", "
        && digits(&b[5..7], 31)
        && b[7] == b' '
        && MONTHS.contains(&&s[8..11])
        && b[11] == b' '
        && digits(&b[12..16], 9999)
        && b[16] == b' '
        && digits(&b[17..19], 23)
        && b[19] == b':'
        && digits(&b[20..22], 59)
        && b[22] == b':'
        && digits(&b[23..25], 60)
        && &b[25..] == b" GMT"
}

#[cfg(test)]
mod tests {
    use super::is_sip_date;

    #[test]
    fn dates() {
        assert!(is_sip_date("Sat, 15 Oct 2005 04:44:56 GMT"));
        assert!(!is_sip_date("Fri, 01 Jan 2010 16:00:00 EST"));
        assert!(!is_sip_date("Fri, 01 Jan 2010 16:00 GMT"));
        assert!(!is_sip_date("Fri, 41 Jan 2010 16:00:00 GMT"));
        assert!(!is_sip_date("Fry, 01 Jan 2010 16:00:00 GMT"));
        assert!(!is_sip_date("Fri, 01 Jan 2010 16:00:0é GMT"));
    }
}
