//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of prime size `m` in
//! which every backend owns ~m/n entries, and removing one of n backends moves ~1/n of them.
//! The permutation depends only on backend addresses and the seed, so every node builds the
//! same table from the same backend set.

use std::net::SocketAddr;

/// The table size must be prime for the permutations to cover every entry.
pub fn is_prime(m: u32) -> bool {
    if m < 2 {
        return false;
    }
    let mut d = 2u32;
    while d.saturating_mul(d) <= m {
        if m.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// Seed shared by every node (a cluster-wide constant, like Cilium's default).
pub const SEED: u64 = 0x6665_7272_6974_6531; // "ferrite1"

/// FNV-1a over the backend's textual address, mixed with `salt` (stable across builds/arches).
fn hash(backend: &SocketAddr, salt: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    for b in backend.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Final avalanche (splitmix64) so nearby addresses get unrelated permutations.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Builds the table: entry `i` holds an index into `backends`. `backends` must be sorted and
/// unique (as [`super::Frontend`] guarantees) and non-empty; `m` prime and > backends.len().
pub fn table(backends: &[SocketAddr], m: u32, seed: u64) -> Vec<u32> {
    assert!(is_prime(m), "Maglev table size {m} is not prime");
    let n = backends.len();
    assert!(
        n > 0 && n < m as usize,
        "Maglev needs 0 < backends < table size"
    );
    let m64 = u64::from(m);
    let perms: Vec<(u64, u64)> = backends
        .iter()
        .map(|b| {
            (
                hash(b, seed) % m64,
                hash(b, seed.rotate_left(17) ^ 0x5bd1_e995) % (m64 - 1) + 1,
            )
        })
        .collect();
    let mut next = vec![0u64; n];
    let mut entry = vec![u32::MAX; m as usize];
    let mut filled = 0usize;
    'outer: loop {
        for (i, &(offset, skip)) in perms.iter().enumerate() {
            let mut c = (offset + next[i] * skip) % m64;
            while entry[usize::try_from(c).expect("c < m")] != u32::MAX {
                next[i] += 1;
                c = (offset + next[i] * skip) % m64;
            }
            entry[usize::try_from(c).expect("c < m")] = u32::try_from(i).expect("n < m");
            next[i] += 1;
            filled += 1;
            if filled == m as usize {
                break 'outer;
            }
        }
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(n: usize) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = (0..n)
            .map(|i| {
                format!("10.244.{}.{}:8080", i / 200, i % 200 + 2)
                    .parse()
                    .unwrap()
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn primes() {
        assert!(is_prime(16_381) && is_prime(251) && is_prime(65_537));
        assert!(!is_prime(16_383) && !is_prime(1) && !is_prime(0) && !is_prime(65_536));
    }

    #[test]
    fn every_backend_gets_its_share() {
        let b = backends(7);
        let t = table(&b, 16_381, SEED);
        let mut counts = [0u32; 7];
        for &e in &t {
            counts[e as usize] += 1;
        }
        let ideal = 16_381 / 7;
        for c in counts {
            assert!(
                c.abs_diff(ideal) <= ideal / 50,
                "share {c} vs ideal {ideal}"
            );
        }
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth() {
        for n in [3usize, 5, 10, 30] {
            let b = backends(n);
            let before = table(&b, 16_381, SEED);
            let removed = b[n / 2];
            let rest: Vec<SocketAddr> = b.iter().copied().filter(|x| *x != removed).collect();
            let after = table(&rest, 16_381, SEED);
            let moved = before
                .iter()
                .zip(&after)
                .filter(|(x, y)| b[**x as usize] != rest[**y as usize])
                .count();
            // Entries of the removed backend must move (≈1/n); others should barely move.
            let must = before.iter().filter(|x| b[**x as usize] == removed).count();
            assert!(moved >= must);
            let extra = moved - must;
            assert!(
                // moved / 16381 ≤ 1.25/n + 0.01, in integers.
                moved * n * 100 <= 16_381 * (125 + n),
                "n={n}: moved {moved} ({extra} beyond the removed backend's {must})"
            );
        }
    }

    #[test]
    fn same_backends_same_table_on_every_node() {
        let b = backends(4);
        let mut shuffled = b.clone();
        shuffled.reverse();
        shuffled.sort();
        assert_eq!(table(&b, 251, SEED), table(&shuffled, 251, SEED));
        assert_ne!(
            table(&b, 251, SEED),
            table(&b, 251, SEED ^ 1),
            "seed matters"
        );
    }
}
