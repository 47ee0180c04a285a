//! The custodian formats against vectors made by an independent Python
//! implementation (tests/data/gen_custodian_vectors.py).

use p256::{PublicKey, SecretKey};
use rand::RngCore;
use serde_json::Value;
use vault_core::custodian::ecies::{open_with, seal_to_with, soft_ecdh};
use vault_core::custodian::shamir::{combine, split, Share};

fn hex(s: &Value) -> Vec<u8> {
    let s = s.as_str().unwrap();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Replays a fixed byte stream as "randomness".
struct Replay(Vec<u8>, usize);

impl RngCore for Replay {
    fn next_u32(&mut self) -> u32 {
        unimplemented_rng()
    }
    fn next_u64(&mut self) -> u64 {
        unimplemented_rng()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for d in dest {
            *d = self.0[self.1];
            self.1 += 1;
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

fn unimplemented_rng() -> ! {
    panic!("split draws bytes only")
}

fn vectors() -> Value {
    serde_json::from_str(include_str!("data/custodian_vectors.json")).unwrap()
}

#[test]
fn shamir_matches_the_reference() {
    for v in vectors()["shamir"].as_array().unwrap() {
        let (k, n) = (
            v["k"].as_u64().unwrap() as usize,
            v["n"].as_u64().unwrap() as usize,
        );
        let secret = hex(&v["secret"]);
        let want: Vec<Vec<u8>> = v["shares"].as_array().unwrap().iter().map(hex).collect();
        // Split with the reference's coefficients gives the reference's shares.
        let mut rng = Replay(hex(&v["coefficient_stream"]), 0);
        let got = split(&secret, k, n, &mut rng).unwrap();
        assert_eq!(rng.1, rng.0.len(), "every coefficient used");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(&g.to_bytes()[..], &w[..]);
        }
        // Any k of the reference's shares combine to the secret.
        for start in 0..n {
            let pick: Vec<Share> = (0..k)
                .map(|i| Share::from_bytes(&want[(start + i) % n]).unwrap())
                .collect();
            assert_eq!(&combine(&pick, k).unwrap()[..], &secret[..]);
        }
    }
}

#[test]
fn ecies_matches_the_reference() {
    for v in vectors()["ecies"].as_array().unwrap() {
        let rd = SecretKey::from_slice(&hex(&v["recipient_d"])).unwrap();
        let ed = SecretKey::from_slice(&hex(&v["ephemeral_d"])).unwrap();
        let rpub = PublicKey::from_sec1_bytes(&hex(&v["recipient_pub"])).unwrap();
        assert_eq!(rd.public_key(), rpub);
        let nonce: [u8; 12] = hex(&v["nonce"]).try_into().unwrap();
        let (aad, pt, env) = (hex(&v["aad"]), hex(&v["plaintext"]), hex(&v["envelope"]));
        assert_eq!(seal_to_with(&rpub, &aad, &pt, &ed, nonce), env);
        let mut ecdh = |p: &PublicKey| Ok(soft_ecdh(&rd, p));
        assert_eq!(
            &open_with(&env, &rpub, &aad, &mut ecdh).unwrap()[..],
            &pt[..]
        );
        let mut bad_aad = aad.clone();
        bad_aad.push(b'x');
        assert!(open_with(&env, &rpub, &bad_aad, &mut ecdh).is_err());
    }
}
