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
    Digest, DigestValues, EccPoint, KeyedHashScheme, MaxBuffer, PcrSelectionList,
    PcrSelectionListBuilder, PcrSlot, Private, Public, PublicBuilder, PublicEccParametersBuilder,
    PublicKeyedHashParameters, SensitiveData, SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::{Context, TctiNameConf};
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

    /// Seals `key` under the primary, bound to the current values of `pcrs`.
    pub(crate) fn seal(
        &mut self,
        pcrs: &[u8],
        key: &Key32,
    ) -> Result<(Public, Private), SealError> {
        let selection = pcr_selection(pcrs)?;
        let primary = self.create_primary()?;
        let digest = self.pcr_policy_digest(&selection)?;
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
        self.policy_pcr(session, &selection)?;
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
