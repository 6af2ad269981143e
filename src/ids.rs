//! Object ids: `prefix + 24 base62 characters` that sort in creation order.
//!
//! The 24 characters are 9 for the millisecond timestamp and 15 for a random number (about 89
//! bits), each in fixed width with an alphabet in ASCII order, so byte order is creation order and cursor
//! pagination is a key-range read on every backend. Within one millisecond the random part is
//! incremented (as in monotonic ULIDs), so objects made in the same second by one process keep
//! the order they were made in.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Base62 in ASCII order: digits < upper case < lower case.
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const WIDTH: usize = 24;
const TIME_WIDTH: usize = 9;
const RANDOM_WIDTH: usize = WIDTH - TIME_WIDTH;
/// 62^15: the random part stays below it.
const RANDOM_SPACE: u128 = 768_909_704_948_766_668_552_634_368;

struct Last {
    millis: u64,
    random: u128,
}

static LAST: Mutex<Last> = Mutex::new(Last {
    millis: 0,
    random: 0,
});

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seconds since the epoch, the `created_at` of every object.
pub fn now_secs() -> i64 {
    (now_millis() / 1000) as i64
}

fn random_u128() -> u128 {
    let mut buf = [0u8; 16];
    // getrandom only fails without an OS entropy source; fall back to time-derived bits
    // (uniqueness then rests on the monotonic increment).
    if getrandom::fill(&mut buf).is_err() {
        let n = now_millis() as u128;
        buf = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)).to_le_bytes();
    }
    u128::from_le_bytes(buf)
}

/// The 24-character sortable body of a new id.
pub fn new_body() -> String {
    let millis = now_millis();
    let random = {
        let mut last = match LAST.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if millis > last.millis {
            last.millis = millis;
            // Start in the lower half so increments within this millisecond never wrap.
            last.random = random_u128() % (RANDOM_SPACE / 2);
        } else {
            // Same (or an earlier, clock-stepped) millisecond: stay monotonic.
            let next = last.random + 1 + (random_u128() & 0xffff);
            if next >= RANDOM_SPACE {
                // Exhausted (practically impossible): move to the next millisecond.
                last.millis += 1;
                last.random = random_u128() % (RANDOM_SPACE / 2);
            } else {
                last.random = next;
            }
        }
        (last.millis, last.random)
    };
    let mut out = String::with_capacity(WIDTH);
    encode(u128::from(random.0), TIME_WIDTH, &mut out);
    encode(random.1, RANDOM_WIDTH, &mut out);
    out
}

/// Appends `n` in base62, left-padded with '0' to `width` characters.
fn encode(mut n: u128, width: usize, out: &mut String) {
    let mut buf = [b'0'; WIDTH];
    for slot in buf[..width].iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out.extend(buf[..width].iter().map(|&b| b as char));
}

/// A new id with the given prefix (`asst_`, `thread_`, `msg_`, `run_`, `step_`, `vs_`,
/// `vsfb_`, `file-`, `call_`).
pub fn new_id(prefix: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + WIDTH);
    s.push_str(prefix);
    s.push_str(&new_body());
    s
}

/// The first (or, with `last`, the final) id with `prefix` that could be made in millisecond
/// `millis`: ids sort by the millisecond they were made in, so this bounds a key-range read
/// by creation time.
pub fn bound_at(prefix: &str, millis: u64, last: bool) -> String {
    let mut s = String::with_capacity(prefix.len() + WIDTH);
    s.push_str(prefix);
    encode(u128::from(millis), TIME_WIDTH, &mut s);
    let fill = if last { ALPHABET[61] } else { ALPHABET[0] };
    s.extend(std::iter::repeat_n(fill as char, RANDOM_WIDTH));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_in_creation_order() {
        let ids: Vec<String> = (0..10_000).map(|_| new_id("msg_")).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        let mut dedup = sorted.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), ids.len());
        assert!(ids.iter().all(|id| id.len() == 4 + 24));
        assert!(ids[0][4..].bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn bounds_enclose_the_ids_of_their_millisecond() {
        let id = new_id("file-");
        let millis = now_millis();
        let (lo, hi) = (
            bound_at("file-", millis - 1000, true),
            bound_at("file-", millis + 1000, false),
        );
        assert!(lo < id && id < hi, "{lo} < {id} < {hi}");
        assert_eq!(lo.len(), id.len());
        assert!(bound_at("file-", 5, false) < bound_at("file-", 5, true));
        assert!(bound_at("file-", 5, true) < bound_at("file-", 6, false));
    }

    #[test]
    fn encoding_is_fixed_width_and_ordered() {
        let enc = |n: u128, w: usize| {
            let mut s = String::new();
            encode(n, w, &mut s);
            s
        };
        assert_eq!(enc(0, 9), "000000000");
        assert!(enc(61, 15) < enc(62, 15));
        assert_eq!(enc(RANDOM_SPACE - 1, 15), "zzzzzzzzzzzzzzz");
        // 2^48 ms (year 10889) still fits the time part.
        assert_eq!(enc(1 << 48, 9).len(), 9);
    }
}
