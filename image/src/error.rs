//! The crate's error type.

use std::io;

use vault_core::boot::BootFormatError;

/// Why an image operation failed. Every variant has a stable
/// [`code`](ImageError::code); messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The bundle's signature does not verify under the given key (includes
    /// any modification of the manifest or the signature bytes).
    #[error("bundle signature does not verify: {0}")]
    BundleBadSignature(String),
    /// A part's name, size or SHA-256 differs from the signed manifest.
    #[error("bundle part does not match the signed manifest: {0}")]
    BundlePartMismatch(String),
    /// The bundle ends early.
    #[error("bundle is truncated: {0}")]
    BundleTruncated(String),
    /// The bundle's structure or manifest is invalid (or trailing bytes).
    #[error("bundle is malformed: {0}")]
    BundleMalformed(String),
    /// A key or signed policy is malformed, or a policy or signature does
    /// not verify (`vault_core::boot`); message and code are the core
    /// error's (`key_malformed`, `policy_malformed`, `policy_bad_signature`,
    /// `signature_invalid`).
    #[error(transparent)]
    Format(#[from] BootFormatError),
    /// Reading or writing a file or stream failed.
    #[error("I/O error ({context}): {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl ImageError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ImageError::BundleBadSignature(_) => "bundle_bad_signature",
            ImageError::BundlePartMismatch(_) => "bundle_part_mismatch",
            ImageError::BundleTruncated(_) => "bundle_truncated",
            ImageError::BundleMalformed(_) => "bundle_malformed",
            ImageError::Format(e) => e.code(),
            ImageError::Io { .. } => "io_error",
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        ImageError::Io {
            context: context.into(),
            source,
        }
    }
}
