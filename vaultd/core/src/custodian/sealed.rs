//! The offline-encrypted ("sealed") tier: values the appliance stores but
//! cannot open.
//!
//! Writing: the value is encrypted under a fresh data key (AES-256-GCM,
//! associated data = [`crate::keyring::value_aad`] with [`Tier::Sealed`]);
//! the data key is split k-of-n ([`super::shamir`]) and each share is
//! sealed to one custodian's 9d key ([`super::ecies`]) with associated data
//! [`share_aad`] (secret path, version, custodian). The data key is then
//! dropped (zeroized): it is never wrapped under the root key.
//!
//! Opening (break-glass): the requester makes a one-time P-256 key pair and
//! opens a request carrying the public half. Each approving custodian opens
//! their share with ECDH on their YubiKey and re-seals it to the one-time
//! key with [`transfer_aad`] (request id, path, version, custodian). The
//! requester combines k shares locally ([`open`]); the AEAD around the value
//! rejects a wrong or short set of shares.

use p256::{PublicKey, SecretKey};
use rand::RngCore;
use zeroize::Zeroizing;

use super::ecies::{self, soft_ecdh, EciesError, SharedX};
use super::shamir::{self, ShamirError, Share};
use crate::barrier;
use crate::keyring::{value_aad, Tier};
use crate::keys::{label, DataKey};
use crate::secret::{Key32, SecretBytes};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealedError {
    #[error(transparent)]
    Shamir(#[from] ShamirError),
    #[error("share of {0}: {1}")]
    Envelope(String, EciesError),
    #[error("the shares do not open the value (wrong, mixed or too few shares)")]
    WrongShares,
    #[error("{0} shares are needed, {1} were given")]
    TooFewShares(usize, usize),
    #[error("custodian {0} appears twice")]
    DuplicateCustodian(String),
}

impl SealedError {
    pub fn code(&self) -> &'static str {
        match self {
            SealedError::Shamir(_) => "invalid_share",
            SealedError::Envelope(..) => "share_envelope",
            SealedError::WrongShares => "wrong_shares",
            SealedError::TooFewShares(..) => "too_few_shares",
            SealedError::DuplicateCustodian(_) => "duplicate_custodian",
        }
    }
}

fn fields(label: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut v = label.to_vec();
    for f in parts {
        v.extend_from_slice(&(f.len() as u32).to_be_bytes());
        v.extend_from_slice(f);
    }
    v
}

/// Associated data of a stored share: binds it to secret, version and custodian.
pub fn share_aad(path: &str, version: u64, custodian: &str) -> Vec<u8> {
    fields(
        label::SEALED_SHARE_AAD,
        &[
            path.as_bytes(),
            &version.to_be_bytes(),
            custodian.as_bytes(),
        ],
    )
}

/// Associated data of a share re-sealed to a requester's one-time key.
pub fn transfer_aad(request_id: &str, path: &str, version: u64, custodian: &str) -> Vec<u8> {
    fields(
        label::BREAKGLASS_SHARE_AAD,
        &[
            request_id.as_bytes(),
            path.as_bytes(),
            &version.to_be_bytes(),
            custodian.as_bytes(),
        ],
    )
}

/// What the appliance stores for one sealed-tier version.
pub struct SealedSecret {
    /// AES-256-GCM under the (discarded) data key.
    pub ciphertext: Vec<u8>,
    /// (custodian, envelope) for every recipient.
    pub shares: Vec<(String, Vec<u8>)>,
}

/// Encrypts `value` so that `k` of `recipients` (custodian, 9d key) are needed.
pub fn seal(
    path: &str,
    version: u64,
    value: &[u8],
    recipients: &[(String, PublicKey)],
    k: usize,
    rng: &mut dyn RngCore,
) -> Result<SealedSecret, SealedError> {
    for (i, (a, _)) in recipients.iter().enumerate() {
        if recipients[..i].iter().any(|(b, _)| a == b) {
            return Err(SealedError::DuplicateCustodian(a.clone()));
        }
    }
    let dek = DataKey::generate();
    let parts = shamir::split(dek.expose_secret(), k, recipients.len(), rng)?;
    let ciphertext = barrier::encrypt(dek.key32(), &value_aad(path, version, Tier::Sealed), value);
    let shares = parts
        .iter()
        .zip(recipients)
        .map(|(s, (id, pk))| {
            (
                id.clone(),
                ecies::seal_to(pk, &share_aad(path, version, id), &s.to_bytes(), rng),
            )
        })
        .collect();
    Ok(SealedSecret { ciphertext, shares })
}

/// A custodian's side of a break-glass request: open the stored share with
/// the token's ECDH and re-seal it to the requester's one-time key.
#[allow(clippy::too_many_arguments)]
pub fn forward_share(
    envelope: &[u8],
    kex_public: &PublicKey,
    ecdh: &mut dyn FnMut(&PublicKey) -> Result<SharedX, String>,
    request_id: &str,
    path: &str,
    version: u64,
    custodian: &str,
    requester_key: &PublicKey,
    rng: &mut dyn RngCore,
) -> Result<Vec<u8>, SealedError> {
    let share = ecies::open_with(
        envelope,
        kex_public,
        &share_aad(path, version, custodian),
        ecdh,
    )
    .map_err(|e| SealedError::Envelope(custodian.into(), e))?;
    // Refuse to forward something that is not a share.
    Share::from_bytes(&share)?;
    Ok(ecies::seal_to(
        requester_key,
        &transfer_aad(request_id, path, version, custodian),
        &share,
        rng,
    ))
}

/// The requester's side: open k forwarded shares with the one-time key,
/// combine them and decrypt the value.
pub fn open(
    one_time: &SecretKey,
    request_id: &str,
    path: &str,
    version: u64,
    k: usize,
    forwarded: &[(String, Vec<u8>)],
    ciphertext: &[u8],
) -> Result<SecretBytes, SealedError> {
    if forwarded.len() < k {
        return Err(SealedError::TooFewShares(k, forwarded.len()));
    }
    let public = one_time.public_key();
    let mut shares = Vec::with_capacity(forwarded.len());
    for (i, (who, env)) in forwarded.iter().enumerate() {
        if forwarded[..i].iter().any(|(w, _)| w == who) {
            return Err(SealedError::DuplicateCustodian(who.clone()));
        }
        let mut ecdh = |e: &PublicKey| Ok(soft_ecdh(one_time, e));
        let bytes: Zeroizing<Vec<u8>> = ecies::open_with(
            env,
            &public,
            &transfer_aad(request_id, path, version, who),
            &mut ecdh,
        )
        .map_err(|e| SealedError::Envelope(who.clone(), e))?;
        shares.push(Share::from_bytes(&bytes)?);
    }
    let dek = shamir::combine(&shares, k)?;
    let dek = DataKey::from_key32(Key32::from_slice(&dek).ok_or(SealedError::WrongShares)?);
    barrier::decrypt(
        dek.key32(),
        &value_aad(path, version, Tier::Sealed),
        ciphertext,
    )
    .map_err(|_| SealedError::WrongShares)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    fn keys(n: usize) -> Vec<(String, SecretKey)> {
        (0..n)
            .map(|i| (format!("c{i}"), SecretKey::random(&mut OsRng)))
            .collect()
    }

    fn run(k: usize, n: usize, use_idx: &[usize]) -> Result<SecretBytes, SealedError> {
        let ks = keys(n);
        let recips: Vec<_> = ks
            .iter()
            .map(|(n, s)| (n.clone(), s.public_key()))
            .collect();
        let sealed = seal("p/x", 4, b"break-glass", &recips, k, &mut OsRng).unwrap();
        let one = SecretKey::random(&mut OsRng);
        let mut fwd = Vec::new();
        for &i in use_idx {
            let (id, sk) = &ks[i];
            let mut ecdh = |e: &PublicKey| Ok(soft_ecdh(sk, e));
            let env = &sealed.shares[i].1;
            fwd.push((
                id.clone(),
                forward_share(
                    env,
                    &sk.public_key(),
                    &mut ecdh,
                    "req1",
                    "p/x",
                    4,
                    id,
                    &one.public_key(),
                    &mut OsRng,
                )
                .unwrap(),
            ));
        }
        open(&one, "req1", "p/x", 4, k, &fwd, &sealed.ciphertext)
    }

    #[test]
    fn k_of_n_opens_and_fewer_do_not() {
        assert_eq!(run(2, 3, &[0, 2]).unwrap().expose_secret(), b"break-glass");
        assert_eq!(
            run(3, 5, &[4, 1, 3]).unwrap().expose_secret(),
            b"break-glass"
        );
        assert_eq!(run(2, 3, &[1]).err(), Some(SealedError::TooFewShares(2, 1)));
    }

    #[test]
    fn shares_are_bound_to_their_context() {
        let ks = keys(2);
        let recips: Vec<_> = ks
            .iter()
            .map(|(n, s)| (n.clone(), s.public_key()))
            .collect();
        let sealed = seal("p/x", 1, b"v", &recips, 2, &mut OsRng).unwrap();
        let one = SecretKey::random(&mut OsRng);
        let (id, sk) = &ks[0];
        let mut ecdh = |e: &PublicKey| Ok(soft_ecdh(sk, e));
        // Another path, version or custodian name does not open the share.
        for (p, v, c) in [("p/y", 1, "c0"), ("p/x", 2, "c0"), ("p/x", 1, "c1")] {
            let r = forward_share(
                &sealed.shares[0].1,
                &sk.public_key(),
                &mut ecdh,
                "r",
                p,
                v,
                c,
                &one.public_key(),
                &mut OsRng,
            );
            assert!(matches!(r, Err(SealedError::Envelope(..))), "{p} {v} {c}");
        }
        let _ = id;
        // Duplicated recipients are refused.
        let dup = vec![recips[0].clone(), recips[0].clone()];
        assert!(matches!(
            seal("p/x", 1, b"v", &dup, 2, &mut OsRng),
            Err(SealedError::DuplicateCustodian(_))
        ));
    }
}
