//! Shamir's secret sharing over GF(2^8), byte by byte.
//!
//! The field is GF(2^8) with the AES polynomial x^8 + x^4 + x^3 + x + 1
//! (0x11b). Each byte of the secret is the constant term of its own random
//! polynomial of degree k-1; share `x` (1..=255) holds the polynomial values
//! at `x`. Any k shares recover the secret by Lagrange interpolation at 0;
//! fewer reveal nothing. Field arithmetic is branch-free on secret data
//! (no log/exp tables), so timing does not depend on share values.

use rand::RngCore;
use zeroize::{Zeroize, Zeroizing};

/// One share: its x coordinate and one y byte per secret byte.
pub struct Share {
    pub x: u8,
    pub y: Zeroizing<Vec<u8>>,
}

impl Share {
    /// Encoding: `x ‖ y`.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(1 + self.y.len()));
        v.push(self.x);
        v.extend_from_slice(&self.y);
        v
    }

    pub fn from_bytes(b: &[u8]) -> Result<Share, ShamirError> {
        match b.split_first() {
            Some((&x, y)) if x != 0 && !y.is_empty() => Ok(Share {
                x,
                y: Zeroizing::new(y.to_vec()),
            }),
            _ => Err(ShamirError::Malformed),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShamirError {
    #[error("need 1 <= k <= n <= 255 (got k={k}, n={n})")]
    BadParameters { k: usize, n: usize },
    #[error("the secret is empty")]
    EmptySecret,
    #[error("need at least {need} shares, got {got}")]
    TooFewShares { need: usize, got: usize },
    #[error("two shares have the same x coordinate")]
    DuplicateShare,
    #[error("shares have different lengths")]
    LengthMismatch,
    #[error("malformed share")]
    Malformed,
}

/// Multiplication in GF(2^8) mod 0x11b, constant time.
fn mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    for _ in 0..8 {
        p ^= a & (0u8.wrapping_sub(b & 1));
        let hi = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (0x1b & hi);
        b >>= 1;
    }
    p
}

/// a^254 = a^-1 (and 0 for 0), by square-and-multiply with a fixed schedule.
fn inv(a: u8) -> u8 {
    let mut r = 1u8;
    let mut base = a;
    let mut e = 254u8;
    for _ in 0..8 {
        let m = 0u8.wrapping_sub(e & 1);
        r = (mul(r, base) & m) | (r & !m);
        base = mul(base, base);
        e >>= 1;
    }
    r
}

/// Splits `secret` into `n` shares with threshold `k` (x = 1..=n).
pub fn split(
    secret: &[u8],
    k: usize,
    n: usize,
    rng: &mut dyn RngCore,
) -> Result<Vec<Share>, ShamirError> {
    if k == 0 || k > n || n > 255 {
        return Err(ShamirError::BadParameters { k, n });
    }
    if secret.is_empty() {
        return Err(ShamirError::EmptySecret);
    }
    let mut shares: Vec<Share> = (1..=n as u8)
        .map(|x| Share {
            x,
            y: Zeroizing::new(vec![0u8; secret.len()]),
        })
        .collect();
    let mut coeffs = Zeroizing::new(vec![0u8; k]);
    for (i, &s) in secret.iter().enumerate() {
        coeffs[0] = s;
        rng.fill_bytes(&mut coeffs[1..]);
        for sh in shares.iter_mut() {
            // Horner's rule.
            let mut y = 0u8;
            for &c in coeffs.iter().rev() {
                y = mul(y, sh.x) ^ c;
            }
            sh.y[i] = y;
        }
    }
    coeffs.zeroize();
    Ok(shares)
}

/// Recovers the secret from at least `k` shares. With fewer than the real
/// threshold the result is a wrong value, not an error: callers must
/// authenticate what they recover (the AEAD around every split key does).
pub fn combine(shares: &[Share], k: usize) -> Result<Zeroizing<Vec<u8>>, ShamirError> {
    if shares.len() < k || k == 0 {
        return Err(ShamirError::TooFewShares {
            need: k.max(1),
            got: shares.len(),
        });
    }
    let used = &shares[..k];
    let len = used[0].y.len();
    for (i, a) in used.iter().enumerate() {
        if a.x == 0 || a.y.is_empty() {
            return Err(ShamirError::Malformed);
        }
        if a.y.len() != len {
            return Err(ShamirError::LengthMismatch);
        }
        if used[..i].iter().any(|b| b.x == a.x) {
            return Err(ShamirError::DuplicateShare);
        }
    }
    // Lagrange basis at 0: l_j = prod_{m != j} x_m / (x_m - x_j); in GF(2^8) minus is xor.
    let basis: Vec<u8> = used
        .iter()
        .enumerate()
        .map(|(j, sj)| {
            let (mut num, mut den) = (1u8, 1u8);
            for (m, sm) in used.iter().enumerate() {
                if m != j {
                    num = mul(num, sm.x);
                    den = mul(den, sm.x ^ sj.x);
                }
            }
            mul(num, inv(den))
        })
        .collect();
    let mut out = Zeroizing::new(vec![0u8; len]);
    for (sj, &l) in used.iter().zip(&basis) {
        for (o, &y) in out.iter_mut().zip(sj.y.iter()) {
            *o ^= mul(y, l);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_axioms() {
        for a in 0..=255u8 {
            assert_eq!(mul(a, 1), a);
            assert_eq!(mul(a, 0), 0);
            if a != 0 {
                assert_eq!(mul(a, inv(a)), 1, "{a}");
            }
            for b in [0u8, 1, 2, 3, 0x53, 0xca, 0xff] {
                assert_eq!(mul(a, b), mul(b, a));
            }
        }
        // FIPS-197 §4.2: {57} • {83} = {c1}.
        assert_eq!(mul(0x57, 0x83), 0xc1);
        assert_eq!(inv(0x53), 0xca);
    }

    #[test]
    fn any_k_of_n_recover_and_fewer_do_not() {
        let secret = b"break-glass data key 32 bytes!!!";
        let mut rng = rand::rngs::OsRng;
        for (k, n) in [(1, 1), (1, 3), (2, 3), (3, 5), (5, 5)] {
            let shares = split(secret, k, n, &mut rng).unwrap();
            // every k-subset, in every rotation
            for start in 0..n {
                let pick: Vec<Share> = (0..k)
                    .map(|i| {
                        let s = &shares[(start + i) % n];
                        Share {
                            x: s.x,
                            y: s.y.clone(),
                        }
                    })
                    .collect();
                assert_eq!(&combine(&pick, k).unwrap()[..], &secret[..], "k={k} n={n}");
                if k > 1 {
                    assert_ne!(&combine(&pick[..k - 1], k - 1).unwrap()[..], &secret[..]);
                }
            }
        }
    }

    #[test]
    fn bad_input_is_refused() {
        let mut rng = rand::rngs::OsRng;
        assert!(split(b"s", 0, 3, &mut rng).is_err());
        assert!(split(b"s", 4, 3, &mut rng).is_err());
        assert!(split(b"s", 2, 256, &mut rng).is_err());
        assert!(split(b"", 2, 3, &mut rng).is_err());
        let sh = split(b"secret", 2, 3, &mut rng).unwrap();
        let dup = [
            Share {
                x: sh[0].x,
                y: sh[0].y.clone(),
            },
            Share {
                x: sh[0].x,
                y: sh[0].y.clone(),
            },
        ];
        assert_eq!(combine(&dup, 2).err(), Some(ShamirError::DuplicateShare));
        assert_eq!(
            combine(&sh[..1], 2).err(),
            Some(ShamirError::TooFewShares { need: 2, got: 1 })
        );
        let short = [
            Share {
                x: 1,
                y: Zeroizing::new(vec![1]),
            },
            Share {
                x: 2,
                y: Zeroizing::new(vec![1, 2]),
            },
        ];
        assert_eq!(combine(&short, 2).err(), Some(ShamirError::LengthMismatch));
        assert!(Share::from_bytes(&[0, 1, 2]).is_err());
        assert!(Share::from_bytes(&[3]).is_err());
        let b = sh[1].to_bytes();
        assert_eq!(Share::from_bytes(&b).unwrap().x, sh[1].x);
    }
}
