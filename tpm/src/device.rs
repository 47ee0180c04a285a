//! ESAPI plumbing: one [`Tpm`] per operation, which flushes every transient
//! handle it created when dropped (success or error path alike).

use std::str::FromStr;

use tss_esapi::attributes::{ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{KeyHandle, ObjectHandle, PcrHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Digest, DigestValues, EccParameter, EccPoint, EccScheme, EccSignature, HashScheme,
    KeyedHashScheme, MaxBuffer, Name, Nonce, PcrSelectionList, PcrSelectionListBuilder, PcrSlot,
    Private, Public, PublicBuilder, PublicEccParametersBuilder, PublicKeyedHashParameters,
    SensitiveData, Signature, SymmetricDefinition, SymmetricDefinitionObject, VerifiedTicket,
};
use tss_esapi::{Context, TctiNameConf};
use vault_core::boot::ImagePublicKey;
use vault_core::seal::{SealError, SealKind};
use vault_core::secret::Key32;

use crate::config::ConfigError;
use crate::error::map_tss;

pub(crate) fn tcti_conf(tcti: &str) -> Result<TctiNameConf, ConfigError> {
    TctiNameConf::from_str(tcti).map_err(|_| ConfigError::BadTcti(tcti.to_string()))
}

fn device_err(call: &'static str, message: impl Into<String>) -> SealError {
    SealError::Device {
        kind: SealKind::Tpm,
        call,
        message: message.into(),
    }
}

/// The storage primary: a deterministic ECC P-256 restricted decryption key
/// under the owner hierarchy (the same template always yields the same key
/// on the same TPM, so it is recreated instead of persisted).
pub(crate) fn primary_template() -> Result<Public, tss_esapi::Error> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()?;
    let params = PublicEccParametersBuilder::new_restricted_decryption_key(
        SymmetricDefinitionObject::AES_128_CFB,
        EccCurve::NistP256,
    )
    .build()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(params)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
}

/// The sealed data object: KeyedHash, bound to the TPM and the primary,
/// usable only through `auth_policy` (no password use), not a signing or
/// decryption key.
pub(crate) fn sealed_object_template(auth_policy: Digest) -> Result<Public, tss_esapi::Error> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_user_with_auth(false)
        .with_admin_with_policy(true)
        .with_no_da(true)
        .build()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_auth_policy(auth_policy)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Digest::default())
        .build()
}

/// The image-signing key as an external public ECC P-256 key: scheme
/// ECDSA-SHA256, attributes `sign` only, empty authPolicy. Must match
/// `vault_core::boot::policy::tpm_public_area` byte for byte (the Name is
/// checked on every load).
pub(crate) fn image_key_template(pk: &ImagePublicKey) -> Result<Public, tss_esapi::Error> {
    let attributes = ObjectAttributesBuilder::new()
        .with_sign_encrypt(true)
        .build()?;
    let params = PublicEccParametersBuilder::new_unrestricted_signing_key(
        EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
        EccCurve::NistP256,
    )
    .build()?;
    let (x, y) = pk.affine_xy();
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(params)
        .with_ecc_unique_identifier(EccPoint::new(
            EccParameter::try_from(x.to_vec())?,
            EccParameter::try_from(y.to_vec())?,
        ))
        .build()
}

pub(crate) fn pcr_selection(pcrs: &[u8]) -> Result<PcrSelectionList, SealError> {
    let slots = pcrs
        .iter()
        .map(|&p| PcrSlot::try_from(1u32 << p).map_err(|e| map_tss("PcrSlot", e)))
        .collect::<Result<Vec<_>, _>>()?;
    PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(|e| map_tss("PcrSelectionList", e))
}

/// An ESAPI context and the transient handles created through it.
pub(crate) struct Tpm {
    ctx: Context,
    handles: Vec<ObjectHandle>,
}

impl Tpm {
    /// Opens a context; any failure means the TPM cannot be reached.
    pub(crate) fn connect(tcti: &str) -> Result<Tpm, SealError> {
        let conf = tcti_conf(tcti).map_err(|e| device_err("config", e.to_string()))?;
        let ctx = Context::new(conf)
            .map_err(|e| SealError::TpmUnavailable(format!("cannot open TCTI {tcti}: {e}")))?;
        Ok(Tpm {
            ctx,
            handles: Vec::new(),
        })
    }

    fn track(&mut self, h: ObjectHandle) {
        self.handles.push(h);
    }

    /// Flushes a handle now (and forgets it).
    fn flush(&mut self, h: ObjectHandle) -> Result<(), SealError> {
        self.handles.retain(|x| *x != h);
        self.ctx
            .flush_context(h)
            .map_err(|e| map_tss("Esys_FlushContext", e))
    }

    fn flush_session(&mut self, s: AuthSession) -> Result<(), SealError> {
        self.flush(SessionHandle::from(s).into())
    }

    pub(crate) fn get_random(&mut self, n: usize) -> Result<(), SealError> {
        self.ctx
            .get_random(n)
            .map(drop)
            .map_err(|e| map_tss("Esys_GetRandom", e))
    }

    pub(crate) fn create_primary(&mut self) -> Result<KeyHandle, SealError> {
        let template = primary_template().map_err(|e| map_tss("primary template", e))?;
        let r = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.create_primary(Hierarchy::Owner, template, None, None, None, None)
            })
            .map_err(|e| map_tss("Esys_CreatePrimary", e))?;
        self.track(r.key_handle.into());
        Ok(r.key_handle)
    }

    /// Starts a session with AES-128-CFB parameter encryption in both
    /// directions, salted with `salt_key` when given.
    fn start_session(
        &mut self,
        salt_key: Option<KeyHandle>,
        kind: SessionType,
    ) -> Result<AuthSession, SealError> {
        let s = self
            .ctx
            .start_auth_session(
                salt_key,
                None,
                None,
                kind,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(|e| map_tss("Esys_StartAuthSession", e))?
            .ok_or_else(|| device_err("Esys_StartAuthSession", "no session handle returned"))?;
        self.track(SessionHandle::from(s).into());
        if kind != SessionType::Trial {
            let (attrs, mask) = SessionAttributesBuilder::new()
                .with_decrypt(true)
                .with_encrypt(true)
                .build();
            self.ctx
                .tr_sess_set_attributes(s, attrs, mask)
                .map_err(|e| map_tss("Esys_TRSess_SetAttributes", e))?;
        }
        Ok(s)
    }

    fn policy_pcr(&mut self, s: AuthSession, pcrs: &PcrSelectionList) -> Result<(), SealError> {
        let ps = PolicySession::try_from(s).map_err(|e| map_tss("PolicySession", e))?;
        // An empty digest makes the TPM use the current PCR values.
        self.ctx
            .policy_pcr(ps, Digest::default(), pcrs.clone())
            .map_err(|e| map_tss("Esys_PolicyPCR", e))
    }

    /// The PolicyPCR digest for the current values of `pcrs`.
    fn pcr_policy_digest(&mut self, pcrs: &PcrSelectionList) -> Result<Digest, SealError> {
        let trial = self.start_session(None, SessionType::Trial)?;
        self.policy_pcr(trial, pcrs)?;
        let ps = PolicySession::try_from(trial).map_err(|e| map_tss("PolicySession", e))?;
        let digest = self
            .ctx
            .policy_get_digest(ps)
            .map_err(|e| map_tss("Esys_PolicyGetDigest", e))?;
        self.flush_session(trial)?;
        Ok(digest)
    }

    /// The PolicyPCR digest for the current values of `pcrs`, computed by
    /// the TPM in a trial session.
    pub(crate) fn current_pcr_policy(&mut self, pcrs: &[u8]) -> Result<[u8; 32], SealError> {
        let selection = pcr_selection(pcrs)?;
        let d = self.pcr_policy_digest(&selection)?;
        to32(d.value(), "Esys_PolicyGetDigest")
    }

    /// Reads SHA-256 PCRs, one command per PCR (a TPM may return fewer
    /// PCRs than asked for per call).
    pub(crate) fn read_pcrs(&mut self, pcrs: &[u8]) -> Result<Vec<(u8, [u8; 32])>, SealError> {
        let mut out = Vec::with_capacity(pcrs.len());
        for &p in pcrs {
            let (_, _, values) = self
                .ctx
                .pcr_read(pcr_selection(&[p])?)
                .map_err(|e| map_tss("Esys_PCR_Read", e))?;
            let v = values
                .value()
                .first()
                .ok_or_else(|| device_err("Esys_PCR_Read", format!("PCR {p} not returned")))?;
            out.push((p, to32(v.value(), "Esys_PCR_Read")?));
        }
        Ok(out)
    }

    /// Loads the image key's public area (owner hierarchy, so that
    /// VerifySignature yields a real ticket) and checks that the TPM's Name
    /// for it is the one computed in software.
    pub(crate) fn load_image_key(
        &mut self,
        pk: &ImagePublicKey,
    ) -> Result<(KeyHandle, Name), SealError> {
        let template = image_key_template(pk).map_err(|e| map_tss("image key template", e))?;
        let handle = self
            .ctx
            .load_external_public(template, Hierarchy::Owner)
            .map_err(|e| map_tss("Esys_LoadExternal", e))?;
        self.track(handle.into());
        let (_, name, _) = self
            .ctx
            .read_public(handle)
            .map_err(|e| map_tss("Esys_ReadPublic", e))?;
        let expect = vault_core::boot::policy::tpm_key_name(pk);
        if name.value() != expect.as_slice() {
            return Err(device_err(
                "Esys_ReadPublic",
                format!(
                    "the TPM's Name for the image key ({}) differs from the one computed in \
                     software ({}): template mismatch",
                    hex::encode(name.value()),
                    hex::encode(&expect)
                ),
            ));
        }
        Ok((handle, name))
    }

    /// The Name of the image key as the TPM computes it (loads and flushes).
    pub(crate) fn image_key_name(&mut self, pk: &ImagePublicKey) -> Result<Vec<u8>, SealError> {
        let (handle, name) = self.load_image_key(pk)?;
        self.flush(handle.into())?;
        Ok(name.value().to_vec())
    }

    /// The digest a trial session reaches after `PolicyAuthorize(keyName)`
    /// from the zero digest (a trial session does not check the ticket, so
    /// a NULL ticket is passed). Diagnostics and tests only.
    #[cfg(feature = "test-util")]
    pub(crate) fn trial_authorize_digest(
        &mut self,
        key_name: &[u8],
    ) -> Result<[u8; 32], SealError> {
        use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_VERIFIED};
        use tss_esapi::tss2_esys::TPMT_TK_VERIFIED;
        let trial = self.start_session(None, SessionType::Trial)?;
        let ps = PolicySession::try_from(trial).map_err(|e| map_tss("PolicySession", e))?;
        let name = Name::try_from(key_name.to_vec()).map_err(|e| map_tss("Name", e))?;
        let null_ticket = VerifiedTicket::try_from(TPMT_TK_VERIFIED {
            tag: TPM2_ST_VERIFIED,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        })
        .map_err(|e| map_tss("VerifiedTicket", e))?;
        self.ctx
            .policy_authorize(ps, Digest::default(), Nonce::default(), &name, null_ticket)
            .map_err(|e| map_tss("Esys_PolicyAuthorize", e))?;
        let d = self
            .ctx
            .policy_get_digest(ps)
            .map_err(|e| map_tss("Esys_PolicyGetDigest", e))?;
        self.flush_session(trial)?;
        to32(d.value(), "Esys_PolicyGetDigest")
    }

    /// Seals `key` under the primary, bound to the current values of `pcrs`.
    pub(crate) fn seal(
        &mut self,
        pcrs: &[u8],
        key: &Key32,
    ) -> Result<(Public, Private), SealError> {
        let selection = pcr_selection(pcrs)?;
        let digest = self.pcr_policy_digest(&selection)?;
        self.create_sealed(digest, key)
    }

    /// Seals `key` with authPolicy = PolicyAuthorize(image key): any
    /// PolicyPCR digest signed by the key unlocks it. Reads no PCR.
    pub(crate) fn seal_authorized(
        &mut self,
        pk: &ImagePublicKey,
        key: &Key32,
    ) -> Result<(Public, Private), SealError> {
        let name = self.image_key_name(pk)?;
        let policy = vault_core::boot::policy::authorize_policy_digest(&name);
        let digest = Digest::try_from(policy.to_vec()).map_err(|e| map_tss("Digest", e))?;
        self.create_sealed(digest, key)
    }

    /// Creates the sealed data object holding `key` with `auth_policy`.
    fn create_sealed(
        &mut self,
        digest: Digest,
        key: &Key32,
    ) -> Result<(Public, Private), SealError> {
        let primary = self.create_primary()?;
        let template = sealed_object_template(digest).map_err(|e| map_tss("object template", e))?;
        // SensitiveData zeroizes its buffer on drop.
        let sensitive = SensitiveData::try_from(key.expose_secret().to_vec())
            .map_err(|e| map_tss("SensitiveData", e))?;
        // Salted HMAC session (authorises use of the primary) that encrypts
        // the sensitive data on its way to the TPM.
        let session = self.start_session(Some(primary), SessionType::Hmac)?;
        let created = self
            .ctx
            .execute_with_session(Some(session), |c| {
                c.create(primary, template, None, Some(sensitive), None, None)
            })
            .map_err(|e| map_tss("Esys_Create", e))?;
        self.flush_session(session)?;
        self.flush(primary.into())?;
        Ok((created.out_public, created.out_private))
    }

    /// Loads and unseals a sealed object bound to `pcrs`.
    pub(crate) fn unseal(
        &mut self,
        pcrs: &[u8],
        public: Public,
        private: Private,
    ) -> Result<Key32, SealError> {
        let selection = pcr_selection(pcrs)?;
        self.unseal_with(public, private, |tpm, session| {
            tpm.policy_pcr(session, &selection)
        })
    }

    /// Has the TPM verify `signature` (r || s) over `approved_hash(policy)`
    /// with the image key and returns the ticket. The key is flushed again.
    pub(crate) fn verify_policy_signature(
        &mut self,
        pk: &ImagePublicKey,
        policy: &[u8; 32],
        signature: &[u8; 64],
    ) -> Result<(Name, VerifiedTicket), SealError> {
        let (handle, name) = self.load_image_key(pk)?;
        let ahash = vault_core::boot::policy::approved_hash(policy);
        let digest = Digest::try_from(ahash.to_vec()).map_err(|e| map_tss("Digest", e))?;
        let r = EccParameter::try_from(signature[..32].to_vec())
            .map_err(|e| map_tss("EccParameter", e))?;
        let s = EccParameter::try_from(signature[32..].to_vec())
            .map_err(|e| map_tss("EccParameter", e))?;
        let sig = Signature::EcDsa(
            EccSignature::create(HashingAlgorithm::Sha256, r, s)
                .map_err(|e| map_tss("EccSignature", e))?,
        );
        let ticket = self
            .ctx
            .verify_signature(handle, digest, sig)
            .map_err(|e| map_tss("Esys_VerifySignature", e))?;
        self.flush(handle.into())?;
        Ok((name, ticket))
    }

    /// Unseals an object whose authPolicy is PolicyAuthorize(key `name`):
    /// PolicyPCR(`pcrs`) at their current values, then PolicyAuthorize of
    /// the signed `approved` digest with `ticket`.
    pub(crate) fn unseal_authorized(
        &mut self,
        pcrs: &[u8],
        public: Public,
        private: Private,
        approved: &[u8; 32],
        name: &Name,
        ticket: VerifiedTicket,
    ) -> Result<Key32, SealError> {
        let selection = pcr_selection(pcrs)?;
        let approved = Digest::try_from(approved.to_vec()).map_err(|e| map_tss("Digest", e))?;
        let mut ticket = Some(ticket);
        self.unseal_with(public, private, |tpm, session| {
            tpm.policy_pcr(session, &selection)?;
            let ps = PolicySession::try_from(session).map_err(|e| map_tss("PolicySession", e))?;
            let ticket = ticket
                .take()
                .ok_or_else(|| device_err("Esys_PolicyAuthorize", "ticket used twice"))?;
            tpm.ctx
                .policy_authorize(ps, approved.clone(), Nonce::default(), name, ticket)
                .map_err(|e| map_tss("Esys_PolicyAuthorize", e))
        })
    }

    /// Loads a sealed object, runs `policy` in a salted, encrypting policy
    /// session and unseals.
    fn unseal_with(
        &mut self,
        public: Public,
        private: Private,
        policy: impl FnOnce(&mut Tpm, AuthSession) -> Result<(), SealError>,
    ) -> Result<Key32, SealError> {
        let primary = self.create_primary()?;
        let object = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.load(primary, private, public)
            })
            .map_err(|e| map_tss("Esys_Load", e))?;
        self.track(object.into());
        // Salted policy session with parameter encryption: the secret comes
        // back encrypted under a session key only we and the TPM know.
        let session = self.start_session(Some(primary), SessionType::Policy)?;
        policy(self, session)?;
        let data = self
            .ctx
            .execute_with_session(Some(session), |c| c.unseal(object.into()))
            .map_err(|e| map_tss("Esys_Unseal", e))?;
        self.flush_session(session)?;
        self.flush(object.into())?;
        self.flush(primary.into())?;
        Key32::from_slice(data.value()).ok_or_else(|| {
            SealError::BlobCorrupt(format!(
                "sealed object holds {} bytes, expected a 32-byte key",
                data.len()
            ))
        })
    }

    /// Extends SHA-256 PCR `pcr` with the SHA-256 digest of `data`.
    pub(crate) fn extend_pcr(&mut self, pcr: u8, data: &[u8]) -> Result<(), SealError> {
        let buf = MaxBuffer::try_from(data.to_vec()).map_err(|e| map_tss("MaxBuffer", e))?;
        let (digest, _ticket) = self
            .ctx
            .hash(buf, HashingAlgorithm::Sha256, Hierarchy::Null)
            .map_err(|e| map_tss("Esys_Hash", e))?;
        let mut values = DigestValues::new();
        values.set(HashingAlgorithm::Sha256, digest);
        let handle = PcrHandle::try_from(u32::from(pcr)).map_err(|e| map_tss("PcrHandle", e))?;
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.pcr_extend(handle, values)
            })
            .map_err(|e| map_tss("Esys_PCR_Extend", e))
    }
}

fn to32(v: &[u8], call: &'static str) -> Result<[u8; 32], SealError> {
    <[u8; 32]>::try_from(v).map_err(|_| {
        device_err(
            call,
            format!("expected a 32-byte digest, got {} bytes", v.len()),
        )
    })
}

impl Drop for Tpm {
    fn drop(&mut self) {
        // Reverse order: sessions and objects before the primary.
        while let Some(h) = self.handles.pop() {
            if let Err(e) = self.ctx.flush_context(h) {
                tracing::warn!(error = %e, "failed to flush TPM handle");
            }
        }
    }
}
