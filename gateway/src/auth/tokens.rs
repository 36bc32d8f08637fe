//! Viewers from JWTs (jsonwebtoken): HS256 with the secret from `GATEWAY_JWT_SECRET` (the
//! demo generates one), RS256 / ES256 with public keys from the configuration. `exp`, `nbf`,
//! `iss` and `aud` are checked with a configurable leeway. The algorithm of a token must be
//! one we hold a key of that kind for: `alg: none` does not parse, and an HS256 token is only
//! ever checked against the HS256 secret, never against a public key (algorithm confusion).

use std::fmt;
use std::path::PathBuf;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Longest accepted text claim (`sub`, `channel`, `customer`, `store`), in characters.
pub const MAX_CLAIM_CHARS: usize = 200;

/// Shortest accepted HS256 secret, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// `[auth]`: how tokens are checked and minted.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Expected `iss` of every token (and the `iss` of minted ones).
    pub issuer: String,
    /// Expected `aud` of every token (and the `aud` of minted ones).
    pub audience: String,
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Lifetime of minted tokens when `--ttl` is not given, in seconds.
    pub default_ttl_secs: u64,
    /// Public keys for RS256 / ES256 tokens from an identity provider.
    pub public_keys: Vec<PublicKeyConfig>,
}

/// One verification key of an identity provider.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyConfig {
    /// `RS256` or `ES256`.
    pub algorithm: String,
    /// PEM file of the public key.
    pub pem_file: PathBuf,
    /// The `kid` header this key answers to; without it, the key answers tokens without `kid`.
    pub kid: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "commerce-gateway".to_owned(),
            audience: "commerce-api".to_owned(),
            leeway_secs: 30,
            default_ttl_secs: 8 * 3600,
            public_keys: Vec::new(),
        }
    }
}

/// What a viewer may do beyond reading the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Shopper,
    B2bBuyer,
    PosClerk,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Shopper, Role::B2bBuyer, Role::PosClerk, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Shopper => "shopper",
            Role::B2bBuyer => "b2b_buyer",
            Role::PosClerk => "pos_clerk",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The claims of a gateway token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    /// The channel every request with this token runs on.
    pub channel: String,
    pub role: Role,
    /// The customer's e-mail, for shoppers and B2B buyers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// The store code a POS clerk is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

/// Why a token was refused; the message is safe to show to the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the Authorization header must be `Bearer <token>`")]
    Malformed,
    #[error("the token is not a valid JWT")]
    InvalidToken,
    #[error("the token's algorithm is not accepted here")]
    Algorithm,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error(
        "the token was issued for another issuer or audience than this gateway's (its `iss` and `aud` must equal [auth] issuer and audience)"
    )]
    IssuerOrAudience,
    #[error("the token lacks a required claim or has a malformed one")]
    Claims,
    #[error("the token lacks the required claim `{0}`")]
    MissingClaim(String),
    #[error("the token's claim `{0}` is malformed")]
    MalformedClaim(String),
    #[error(
        "HS256 tokens are not accepted: the gateway has no GATEWAY_JWT_SECRET (start it with the secret the token was signed with)"
    )]
    NoSecret,
    #[error("tokens cannot be minted: {0}")]
    CannotMint(String),
    #[error("invalid auth configuration: {0}")]
    Config(String),
}

/// A secret that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: String) -> Self {
        Self(text)
    }

    /// A random secret for demo mode (64 hex characters from two random UUIDs).
    pub fn generate() -> Self {
        Self(format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        ))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Checks and mints tokens.
pub struct Authenticator {
    config: AuthConfig,
    hs256: Option<(EncodingKey, DecodingKey)>,
    public_keys: Vec<(Option<String>, Algorithm, DecodingKey)>,
}

impl Authenticator {
    /// The clock skew allowed on `exp` and `nbf`.
    pub fn leeway_secs(&self) -> u64 {
        self.config.leeway_secs
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("hs256", &self.hs256.is_some())
            .field("public_keys", &self.public_keys.len())
            .finish()
    }
}

impl Authenticator {
    /// Loads the configured public keys; `secret` enables HS256.
    pub fn new(config: &AuthConfig, secret: Option<&Secret>) -> Result<Self, AuthError> {
        let hs256 = match secret {
            Some(secret) if secret.expose().len() < MIN_SECRET_LEN => {
                return Err(AuthError::Config(format!(
                    "GATEWAY_JWT_SECRET must be at least {MIN_SECRET_LEN} bytes"
                )));
            }
            Some(secret) => Some((
                EncodingKey::from_secret(secret.expose().as_bytes()),
                DecodingKey::from_secret(secret.expose().as_bytes()),
            )),
            None => None,
        };
        let mut public_keys = Vec::new();
        for (i, key) in config.public_keys.iter().enumerate() {
            let field = format!("auth.public_keys[{i}]");
            let pem = std::fs::read(&key.pem_file).map_err(|err| {
                AuthError::Config(format!(
                    "{field}.pem_file {}: {err}",
                    key.pem_file.display()
                ))
            })?;
            let (algorithm, decoding) = match key.algorithm.as_str() {
                "RS256" => (Algorithm::RS256, DecodingKey::from_rsa_pem(&pem)),
                "ES256" => (Algorithm::ES256, DecodingKey::from_ec_pem(&pem)),
                other => {
                    return Err(AuthError::Config(format!(
                        "{field}.algorithm must be RS256 or ES256, got {other:?}"
                    )));
                }
            };
            let decoding = decoding.map_err(|err| {
                AuthError::Config(format!(
                    "{field}.pem_file is not a {algorithm:?} public key: {err}"
                ))
            })?;
            public_keys.push((key.kid.clone(), algorithm, decoding));
        }
        Ok(Self {
            config: config.clone(),
            hs256,
            public_keys,
        })
    }

    /// Whether HS256 tokens can be checked and minted.
    pub fn has_secret(&self) -> bool {
        self.hs256.is_some()
    }

    /// The claims of a valid token.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|err| match err.kind() {
            ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
                AuthError::Algorithm
            }
            // `alg: none` (or any name the library does not know) fails to parse as a
            // header; say that it is the algorithm that is refused.
            _ if claimed_algorithm(token).is_some() => AuthError::Algorithm,
            _ => AuthError::InvalidToken,
        })?;
        // The key is chosen by the kind of algorithm the token claims, so a token can never
        // make us check an HMAC against a public key or the other way round.
        let key = match header.alg {
            Algorithm::HS256 => Some(
                self.hs256
                    .as_ref()
                    .map(|(_, decoding)| decoding)
                    .ok_or(AuthError::NoSecret)?,
            ),
            Algorithm::RS256 | Algorithm::ES256 => self
                .public_keys
                .iter()
                .find(|(kid, alg, _)| *alg == header.alg && *kid == header.kid)
                .map(|(_, _, key)| key),
            _ => None,
        }
        .ok_or(AuthError::Algorithm)?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.config.leeway_secs;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|err| match err.kind() {
                ErrorKind::InvalidSignature => AuthError::Signature,
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                    AuthError::IssuerOrAudience
                }
                ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => AuthError::Algorithm,
                ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
                ErrorKind::InvalidClaimFormat(claim) => AuthError::MalformedClaim(claim.clone()),
                ErrorKind::Json(_) => AuthError::Claims,
                _ => AuthError::InvalidToken,
            })?;
        // Even a well-signed token only names things the way we do: short text without
        // control characters (a NUL would reach the database, which PostgreSQL refuses).
        for (name, value) in [
            ("sub", Some(&claims.sub)),
            ("channel", Some(&claims.channel)),
            ("customer", claims.customer.as_ref()),
            ("store", claims.store.as_ref()),
        ] {
            if let Some(value) = value
                && (value.chars().count() > MAX_CLAIM_CHARS || value.chars().any(char::is_control))
            {
                return Err(AuthError::MalformedClaim(name.to_owned()));
            }
        }
        Ok(claims)
    }

    /// Claims for a new token valid from now for `ttl_secs` (the configured default when
    /// `None`).
    pub fn claims(
        &self,
        channel: &str,
        role: Role,
        customer: Option<String>,
        store: Option<String>,
        ttl_secs: Option<u64>,
    ) -> Claims {
        let now = jsonwebtoken::get_current_timestamp();
        let sub = customer
            .clone()
            .or_else(|| store.as_ref().map(|s| format!("{}@{s}", role.as_str())))
            .unwrap_or_else(|| format!("{}@{channel}", role.as_str()));
        Claims {
            sub,
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + ttl_secs.unwrap_or(self.config.default_ttl_secs),
            channel: channel.to_owned(),
            role,
            customer,
            store,
        }
    }

    /// Signs `claims` with the HS256 secret.
    pub fn mint(&self, claims: &Claims) -> Result<String, AuthError> {
        let (encoding, _) = self.hs256.as_ref().ok_or_else(|| {
            AuthError::CannotMint("set GATEWAY_JWT_SECRET (at least 32 bytes)".to_owned())
        })?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, encoding)
            .map_err(|err| AuthError::CannotMint(err.to_string()))
    }
}

/// The `alg` a token's header names, when the header is readable JSON.
fn claimed_algorithm(token: &str) -> Option<String> {
    use base64::Engine;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("alg")?.as_str().map(str::to_owned)
}

/// The token of an `Authorization: Bearer …` header value.
pub fn bearer_token(header: &str) -> Result<&str, AuthError> {
    let (scheme, token) = header.trim().split_once(' ').ok_or(AuthError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn auth() -> Authenticator {
        Authenticator::new(
            &AuthConfig::default(),
            Some(&Secret::new("x".repeat(MIN_SECRET_LEN))),
        )
        .unwrap()
    }

    fn forge(header: &str, claims: &Claims) -> String {
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(serde_json::to_string(claims).unwrap())
        )
    }

    #[test]
    fn minted_tokens_verify_and_carry_their_claims() {
        let auth = auth();
        let claims = auth.claims(
            "b2b",
            Role::B2bBuyer,
            Some("buyer@acme.example".into()),
            None,
            Some(60),
        );
        let token = auth.mint(&claims).unwrap();
        assert_eq!(auth.verify(&token).unwrap(), claims);
    }

    #[test]
    fn refuses_every_kind_of_bad_token() {
        let auth = auth();
        let good = auth.claims("web", Role::Shopper, None, None, Some(60));
        let now = jsonwebtoken::get_current_timestamp();
        let expired = Claims {
            exp: now - 3600,
            ..good.clone()
        };
        let early = Claims {
            nbf: now + 3600,
            ..good.clone()
        };
        let foreign = Claims {
            iss: "someone-else".into(),
            ..good.clone()
        };
        let other_aud = Claims {
            aud: "another-api".into(),
            ..good.clone()
        };
        let other_key = Authenticator::new(
            &AuthConfig::default(),
            Some(&Secret::new("y".repeat(MIN_SECRET_LEN))),
        )
        .unwrap();
        let cases = [
            (auth.mint(&expired).unwrap(), AuthError::Expired),
            (auth.mint(&early).unwrap(), AuthError::NotYetValid),
            (auth.mint(&foreign).unwrap(), AuthError::IssuerOrAudience),
            (auth.mint(&other_aud).unwrap(), AuthError::IssuerOrAudience),
            (other_key.mint(&good).unwrap(), AuthError::Signature),
            (
                forge(r#"{"alg":"none","typ":"JWT"}"#, &good),
                AuthError::Algorithm,
            ),
            (
                forge(r#"{"alg":"RS256","typ":"JWT"}"#, &good),
                AuthError::Algorithm,
            ),
            ("not.a.token".to_owned(), AuthError::InvalidToken),
            (String::new(), AuthError::InvalidToken),
        ];
        for (token, expected) in cases {
            assert_eq!(auth.verify(&token), Err(expected.clone()), "{token}");
        }
    }

    #[test]
    fn short_secrets_and_unknown_algorithms_are_refused_at_start() {
        assert!(matches!(
            Authenticator::new(&AuthConfig::default(), Some(&Secret::new("short".into()))),
            Err(AuthError::Config(_))
        ));
        let config = AuthConfig {
            public_keys: vec![PublicKeyConfig {
                algorithm: "HS512".into(),
                pem_file: "/dev/null".into(),
                kid: None,
            }],
            ..AuthConfig::default()
        };
        assert!(matches!(
            Authenticator::new(&config, None),
            Err(AuthError::Config(message)) if message.contains("auth.public_keys[0].algorithm")
        ));
    }

    /// A fresh ES256 key pair as PEM: (private PKCS#8, public SPKI).
    fn es256_pair() -> (String, String) {
        use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let private = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
        let public = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        (private, public)
    }

    #[test]
    fn es256_tokens_from_a_provider_verify_and_hs256_cannot_pose_as_them() {
        let (private, public) = es256_pair();
        let dir = std::env::temp_dir().join(format!("auth-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem_file = dir.join("idp.pem");
        std::fs::write(&pem_file, &public).unwrap();
        let config = AuthConfig {
            public_keys: vec![PublicKeyConfig {
                algorithm: "ES256".into(),
                pem_file,
                kid: Some("idp-1".into()),
            }],
            ..AuthConfig::default()
        };
        let with_secret =
            Authenticator::new(&config, Some(&Secret::new("s".repeat(MIN_SECRET_LEN)))).unwrap();
        let keys_only = Authenticator::new(&config, None).unwrap();
        let claims = with_secret.claims("web", Role::Admin, None, None, Some(60));
        let sign = |header: Header, key: &EncodingKey| {
            jsonwebtoken::encode(&header, &claims, key).unwrap()
        };
        let mut es_header = Header::new(Algorithm::ES256);
        es_header.kid = Some("idp-1".into());
        let es_key = EncodingKey::from_ec_pem(private.as_bytes()).unwrap();
        let provider_token = sign(es_header.clone(), &es_key);
        assert_eq!(keys_only.verify(&provider_token), Ok(claims.clone()));
        assert_eq!(with_secret.verify(&provider_token), Ok(claims.clone()));
        // Another kid, or none, finds no key.
        let mut other_kid = es_header.clone();
        other_kid.kid = Some("idp-2".into());
        assert_eq!(
            keys_only.verify(&sign(other_kid, &es_key)),
            Err(AuthError::Algorithm)
        );
        // Algorithm confusion: an HS256 token whose HMAC key is the public key's PEM.
        let mut hs_header = Header::new(Algorithm::HS256);
        hs_header.kid = Some("idp-1".into());
        let confused = sign(hs_header, &EncodingKey::from_secret(public.as_bytes()));
        // Without a secret, no HS256 token is ever checked, whatever key signed it.
        assert_eq!(keys_only.verify(&confused), Err(AuthError::NoSecret));
        assert_eq!(with_secret.verify(&confused), Err(AuthError::Signature));
        // Without a secret, nothing can be minted.
        assert!(matches!(
            keys_only.mint(&claims),
            Err(AuthError::CannotMint(_))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn claims_with_control_characters_or_too_long_are_refused() {
        let auth = auth();
        let good = auth.claims(
            "web",
            Role::Shopper,
            Some("a@b.example".into()),
            None,
            Some(60),
        );
        for (claims, name) in [
            (
                Claims {
                    customer: Some("a\u{0}b".into()),
                    ..good.clone()
                },
                "customer",
            ),
            (
                Claims {
                    channel: "w\u{0}b".into(),
                    ..good.clone()
                },
                "channel",
            ),
            (
                Claims {
                    sub: "x".repeat(MAX_CLAIM_CHARS + 1),
                    ..good.clone()
                },
                "sub",
            ),
        ] {
            let token = auth.mint(&claims).unwrap();
            assert_eq!(
                auth.verify(&token),
                Err(AuthError::MalformedClaim(name.into()))
            );
        }
    }

    #[test]
    fn bearer_headers_are_parsed_strictly() {
        assert_eq!(bearer_token("Bearer abc"), Ok("abc"));
        assert_eq!(bearer_token("bearer  abc "), Ok("abc"));
        assert_eq!(bearer_token("Basic abc"), Err(AuthError::Malformed));
        assert_eq!(bearer_token("Bearer"), Err(AuthError::Malformed));
        assert_eq!(bearer_token("Bearer "), Err(AuthError::Malformed));
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::generate();
        assert_eq!(secret.expose().len(), 64);
        assert_eq!(format!("{secret:?}"), "Secret(***)");
    }
}
