//! Hook secrets sealed with envelope encryption under a KMS key: a data key from KMS
//! encrypts the secrets locally (AES-256-GCM), and only the data key's KMS ciphertext is
//! stored beside them. Data keys are reused for a while and decrypted ones cached, so
//! neither a hook write nor a worker batch costs a KMS call in the steady state.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use hookbridge_core::aead::{self, KEY_LEN};
use hookbridge_core::hook::{HookSecrets, SealedSecrets, SecretsOwner};
use hookbridge_core::ports::Sealer;
use hookbridge_core::{Error, Result};

/// The format byte of KMS-sealed blobs from before secrets were bound to their hook: they
/// open for any hook until `hookbridge migrate` re-seals them.
const FORMAT_KMS_UNBOUND: u8 = 2;
/// What unbound blobs were bound to: only their purpose.
const UNBOUND_AAD: &[u8] = b"hookbridge hook secrets v1";
/// The format byte of KMS-sealed blobs bound to their hook ([`SecretsOwner::associated_data`]
/// is the AEAD data of the local encryption). The KMS encryption context names only the
/// purpose: data keys are shared by many hooks so that writes do not each cost a KMS call,
/// and the binding to the hook is the local encryption's.
const FORMAT_KMS_BOUND: u8 = 4;
const CONTEXT_KEY: &str = "purpose";
const CONTEXT_VALUE: &str = "hookbridge-hook-secrets";
/// How long one data key seals new secrets before a fresh one is asked for.
const DATA_KEY_REUSE: Duration = Duration::from_secs(3600);
/// Decrypted data keys kept; beyond this the cache starts over.
const CACHE_MAX: usize = 1024;

struct DataKey {
    plain: [u8; KEY_LEN],
    blob: Vec<u8>,
    made: Instant,
}

/// Seals with a KMS key.
pub struct KmsSealer {
    client: Client,
    key_id: String,
    current: Mutex<Option<DataKey>>,
    opened: Mutex<HashMap<Vec<u8>, [u8; KEY_LEN]>>,
}

impl std::fmt::Debug for KmsSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsSealer").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl KmsSealer {
    /// A sealer using the KMS key `key_id` (id, ARN or `alias/…`).
    pub fn new(client: Client, key_id: impl Into<String>) -> Self {
        Self { client, key_id: key_id.into(), current: Mutex::new(None), opened: Mutex::new(HashMap::new()) }
    }

    async fn data_key(&self) -> Result<([u8; KEY_LEN], Vec<u8>)> {
        {
            let cur = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(k) = cur.as_ref().filter(|k| k.made.elapsed() < DATA_KEY_REUSE) {
                return Ok((k.plain, k.blob.clone()));
            }
        }
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(CONTEXT_KEY, CONTEXT_VALUE)
            .send()
            .await
            .map_err(|e| Error::backend("kms.GenerateDataKey", e))?;
        let plain: [u8; KEY_LEN] = out
            .plaintext()
            .map(Blob::as_ref)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::backend("kms.GenerateDataKey", "no 256-bit plaintext key returned"))?;
        let blob = out
            .ciphertext_blob()
            .map(|b| b.as_ref().to_vec())
            .ok_or_else(|| Error::backend("kms.GenerateDataKey", "no ciphertext returned"))?;
        *self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(DataKey { plain, blob: blob.clone(), made: Instant::now() });
        Ok((plain, blob))
    }

    async fn open_key(&self, blob: &[u8]) -> Result<[u8; KEY_LEN]> {
        if let Some(k) = self.opened.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(blob) {
            return Ok(*k);
        }
        let out = self
            .client
            .decrypt()
            .ciphertext_blob(Blob::new(blob.to_vec()))
            .key_id(&self.key_id)
            .encryption_context(CONTEXT_KEY, CONTEXT_VALUE)
            .send()
            .await
            .map_err(|e| {
                // KMS says the blob itself is damaged: no retry opens it, so its deliveries
                // are cancelled with a reason instead of coming back until the queue gives
                // up on them unrecorded. A blob sealed under another key than the one
                // configured (`IncorrectKeyException`) is a setting to put right, not
                // damage, so that one is retried like any refusal.
                if e.as_service_error().is_some_and(|s| s.is_invalid_ciphertext_exception()) {
                    Error::corrupt("sealed secrets", e)
                } else {
                    Error::backend("kms.Decrypt", e)
                }
            })?;
        let plain: [u8; KEY_LEN] = out
            .plaintext()
            .map(Blob::as_ref)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::corrupt("sealed secrets", "KMS returned no 256-bit key"))?;
        let mut cache = self.opened.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(blob.to_vec(), plain);
        Ok(plain)
    }
}

impl KmsSealer {
    async fn seal_as(&self, format: u8, aad: &[u8], secrets: &HookSecrets) -> Result<SealedSecrets> {
        let plain = serde_json::to_vec(secrets).map_err(|e| Error::backend("sealer.encode", e))?;
        let (key, blob) = self.data_key().await?;
        let blob_len =
            u16::try_from(blob.len()).map_err(|_| Error::backend("kms.GenerateDataKey", "data key blob too long"))?;
        let mut out = vec![format];
        out.extend_from_slice(&blob_len.to_be_bytes());
        out.extend_from_slice(&blob);
        out.extend(aead::seal(&key, aad, &plain));
        Ok(SealedSecrets(out))
    }

    /// Seals in the format before secrets were bound to their hook. Kept only so the
    /// migration that re-seals such blobs can be tested.
    #[doc(hidden)]
    pub async fn seal_unbound(&self, secrets: &HookSecrets) -> Result<SealedSecrets> {
        self.seal_as(FORMAT_KMS_UNBOUND, UNBOUND_AAD, secrets).await
    }
}

#[async_trait]
impl Sealer for KmsSealer {
    async fn seal(&self, owner: SecretsOwner<'_>, secrets: &HookSecrets) -> Result<SealedSecrets> {
        self.seal_as(FORMAT_KMS_BOUND, &owner.associated_data(), secrets).await
    }

    async fn open(&self, owner: SecretsOwner<'_>, sealed: &SealedSecrets) -> Result<HookSecrets> {
        let corrupt = || Error::corrupt("sealed secrets", "not a KMS-sealed blob of this hook");
        let b = &sealed.0;
        let aad = match b.first() {
            Some(&FORMAT_KMS_BOUND) => owner.associated_data(),
            Some(&FORMAT_KMS_UNBOUND) => UNBOUND_AAD.to_vec(),
            // A format past every one this release writes is a newer release's.
            Some(&f) if f > hookbridge_core::hook::NEWEST_SEALED_FORMAT => {
                return Err(Error::NewerFormat { what: "sealed secrets" });
            }
            _ => return Err(corrupt()),
        };
        if b.len() < 3 {
            return Err(corrupt());
        }
        let len = u16::from_be_bytes([b[1], b[2]]) as usize;
        let blob = b.get(3..3 + len).ok_or_else(corrupt)?;
        let body = b.get(3 + len..).ok_or_else(corrupt)?;
        let key = self.open_key(blob).await?;
        let plain = aead::open(&key, &aad, body).map_err(|_| corrupt())?;
        HookSecrets::from_opened(&plain)
    }

    fn is_current(&self, sealed: &SealedSecrets) -> bool {
        sealed.0.first() == Some(&FORMAT_KMS_BOUND)
    }
}
