//! Who a request acts for: its tenant (from the bearer key, one tenant, or a trusted header),
//! the API shape it speaks (`OpenAI-Beta`), the database that serves it (the configured store
//! or its own Astra database), and the headers the proxy's own upstream calls carry for it.

use std::io::Read;

use http::{HeaderMap, HeaderValue, header};
use sha2::{Digest, Sha256};

use crate::config::{
    Config, HEADER_PREFIX, KEY_PREFIX, KeyMapping, MAX_HEADER_TENANT_LEN, SINGLE_TENANT,
    TenancyMode,
};
use crate::error::Error;
use crate::store::astra::{AstraSessions, AstraTarget, Token, is_database_id};
use crate::store::{Store, Tenant};

/// The request header carrying an Astra application token (`AstraCS:…`).
pub const TOKEN_HEADER: &str = "astra-api-token";
/// The request header naming the database (without it: the token's default database).
pub const DATABASE_HEADER: &str = "astra-db-id";
/// Longest token accepted (real ones are ~97 characters).
const MAX_TOKEN_LEN: usize = 1024;

/// Which API shape a request uses (`OpenAI-Beta: assistants=v1` selects v1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    V1,
    V2,
}

/// OpenAI's answer to an Assistants request without a usable `OpenAI-Beta` header.
pub const INVALID_BETA: &str = "You must provide the 'OpenAI-Beta' header to access the Assistants API. Please try again by setting the header 'OpenAI-Beta: assistants=v2'.";

impl ApiVersion {
    /// The shape a request asks for, leniently: `assistants=v1` among the header's tokens
    /// selects v1, anything else is v2. For the GA routes (files, vector stores), where the
    /// header is optional and other betas' tokens are none of our business.
    pub fn of(headers: &http::HeaderMap) -> ApiVersion {
        let v1 = headers
            .get_all("openai-beta")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("assistants=v1"));
        if v1 { ApiVersion::V1 } else { ApiVersion::V2 }
    }

    /// The shape a request to an Assistants beta route (assistants, threads and everything
    /// under them) asks for. No header is v2: this proxy is lenient where OpenAI refused. A
    /// header must hold exactly one `assistants=v1` or `assistants=v2` token (tokens of other
    /// betas beside it are ignored); anything else is OpenAI's 400 `invalid_beta`.
    pub fn required(headers: &http::HeaderMap) -> Result<ApiVersion, Error> {
        let refused = || Error::invalid_code(INVALID_BETA, None, "invalid_beta");
        let mut values = headers.get_all("openai-beta").iter().peekable();
        if values.peek().is_none() {
            return Ok(ApiVersion::V2);
        }
        let mut found = None;
        for value in values {
            let value = value.to_str().map_err(|_| refused())?;
            for token in value.split(',') {
                let Some((name, version)) = token.split_once('=') else {
                    continue;
                };
                if !name.trim().eq_ignore_ascii_case("assistants") {
                    continue;
                }
                let version = match version.trim().to_ascii_lowercase().as_str() {
                    "v1" => ApiVersion::V1,
                    "v2" => ApiVersion::V2,
                    _ => return Err(refused()),
                };
                if found.is_some_and(|f| f != version) {
                    return Err(refused());
                }
                found = Some(version);
            }
        }
        found.ok_or_else(refused)
    }
}

/// The bearer key of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.trim().split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

/// The answer to a key whose tenant was given a name that does not list it
/// (`config::KeyMapping::Retired`). It names neither the tenant nor the key.
pub const RETIRED_KEY: &str = "This API key no longer has access to this proxy's stored assistants, threads, files and vector stores: the operator retired it. Use the key that replaced it.";

/// The tenant a request acts for. In `key` mode it is a hash of the bearer key (the key is
/// never stored), or the named tenant `[[tenancy.keys]]` maps that hash to; a missing key is
/// OpenAI's 401.
pub fn tenant(headers: &HeaderMap, config: &Config) -> Result<Tenant, Error> {
    let key = bearer(headers);
    let Some(key) = key else {
        return Err(Error::Unauthorized {
            message: "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).".into(),
        });
    };
    match config.tenancy.mode {
        TenancyMode::Key => match config.tenancy.tenant_for_key(key_tenant(key)) {
            Some(id) => Ok(Tenant::new(id)),
            None => Err(Error::Unauthorized {
                message: RETIRED_KEY.into(),
            }),
        },
        TenancyMode::Single => Ok(Tenant::new(SINGLE_TENANT)),
        TenancyMode::Header => match headers
            .get(&config.tenancy.header)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= MAX_HEADER_TENANT_LEN)
        {
            Some(v) => Ok(Tenant::new(format!("{HEADER_PREFIX}{v}"))),
            None => Err(Error::Unauthorized {
                message: format!(
                    "Missing tenant header '{}' (tenancy mode 'header').",
                    config.tenancy.header
                ),
            }),
        },
    }
}

/// A stable, non-reversible tenant id for a key (domain-separated SHA-256, 128 bits shown):
/// the key's own tenant, and the `key_hash` of `[[tenancy.keys]]`.
pub fn key_tenant(key: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"assistants-proxy tenant v1\0");
    h.update(key.as_bytes());
    let digest = h.finalize();
    let mut out = String::with_capacity(34);
    out.push_str(KEY_PREFIX);
    for b in &digest[..16] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Who is calling and how: the tenant, the API shape, and the headers the proxy's own
/// upstream calls (embeddings, chat completions) carry on the caller's behalf. The key lives
/// only in memory for the work it pays for; it is never stored or logged.
#[derive(Clone)]
pub struct Caller {
    pub tenant: Tenant,
    /// The database this request reads and writes: the configured `--store`, or the
    /// caller's own Astra database when it sent `astra-api-token` (see `store::astra`).
    pub store: Store,
    pub version: ApiVersion,
    /// Headers forwarded on internal upstream calls: Authorization, OpenAI-Organization,
    /// OpenAI-Project.
    pub upstream_headers: HeaderMap,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("tenant", &self.tenant)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Caller {
    /// Who is calling, and which store serves them. Without Astra headers this is the
    /// configured store (a clone of its handles, nothing else); with them, the caller's
    /// database from the session cache, connecting (or creating it) on first use.
    pub async fn resolve(
        headers: &HeaderMap,
        config: &Config,
        store: &Store,
        astra: Option<&AstraSessions>,
    ) -> Result<Caller, Error> {
        let tenant = tenant(headers, config)?;
        let store = match astra_target(headers)? {
            None => store.clone(),
            Some(target) => match astra {
                Some(sessions) => sessions.store_for(&target).await?,
                None => return Err(headers_refused()),
            },
        };
        let mut upstream_headers = HeaderMap::new();
        for name in ["authorization", "openai-organization", "openai-project"] {
            if let Some(v) = headers.get(name) {
                upstream_headers.insert(name, v.clone());
            }
        }
        if let Some(var) = &config.upstream.api_key_env {
            // A configured key replaces the caller's for the proxy's own calls.
            if let Ok(key) = std::env::var(var)
                && let Ok(v) = HeaderValue::from_str(&format!("Bearer {key}"))
            {
                upstream_headers.insert(header::AUTHORIZATION, v);
            }
        }
        Ok(Caller {
            tenant,
            store,
            version: ApiVersion::of(headers),
            upstream_headers,
        })
    }
}

/// Reads `astra-api-token` / `astra-db-id`; None when the request carries neither.
pub fn astra_target(headers: &HeaderMap) -> Result<Option<AstraTarget>, Error> {
    let token = headers.get(TOKEN_HEADER);
    let db = headers.get(DATABASE_HEADER);
    let Some(token) = token else {
        return match db {
            None => Ok(None),
            Some(_) => Err(Error::invalid(
                format!("The '{DATABASE_HEADER}' header needs an '{TOKEN_HEADER}' header."),
                None,
            )),
        };
    };
    let token = token
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_LEN)
        .ok_or_else(|| Error::Unauthorized {
            message: format!("The '{TOKEN_HEADER}' header does not hold a usable token."),
        })?;
    let database_id = match db {
        None => None,
        Some(v) => {
            let v = v.to_str().unwrap_or_default().trim();
            if !is_database_id(v) {
                return Err(Error::invalid(
                    format!("Invalid '{DATABASE_HEADER}': expected an Astra database id (a UUID)."),
                    None,
                ));
            }
            Some(v.to_ascii_lowercase())
        }
    };
    Ok(Some(AstraTarget {
        token: Token::new(token),
        database_id,
    }))
}

/// The answer when a request sends Astra headers to a proxy that does not honour them:
/// serving it from the configured store instead would put its data where it did not ask.
pub fn headers_refused() -> Error {
    Error::invalid(
        format!(
            "This proxy does not accept per-request Astra databases ('{TOKEN_HEADER}'); \
             send the request without it, or enable astra.per_request_headers."
        ),
        None,
    )
}

/// Longest input `tenant-id --stdin` reads: far above any real key, small enough to refuse
/// a file piped in by mistake without reading it all.
const MAX_KEY_INPUT: u64 = 64 * 1024;

/// `assistants-proxy tenant-id`: reads a key (from the environment variable `--key-env`
/// names, or one line of `stdin` with `--stdin`) and answers what `[[tenancy.keys]]` needs,
/// as TOML lines: `key_hash`, and `tenant_id`, the id the proxy stores that key's rows under
/// (with `--config`, after that file's mappings; `tenant` too when one applies). The key
/// itself is never printed. An `Err` is the message for the operator.
pub fn tenant_id_command(
    args: &crate::config::TenantIdArgs,
    stdin: impl Read,
) -> Result<String, String> {
    let key = if args.stdin {
        key_from_stdin(stdin)?
    } else {
        key_from_env(&args.key_env)?
    };
    let tenancy = match &args.config {
        Some(path) => Some(
            crate::config::FileConfig::read(path)
                .and_then(|file| crate::config::resolve_tenancy(file.tenancy))
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    Ok(key_report(&key, tenancy.as_ref()))
}

/// The lines `tenant-id` prints for a key; `tenancy` is the configuration's, if one was given.
pub fn key_report(key: &str, tenancy: Option<&crate::config::Tenancy>) -> String {
    let hash = key_tenant(key);
    let mut out = format!("key_hash = \"{hash}\"\n");
    match tenancy {
        None => out.push_str(&format!("tenant_id = \"{hash}\"\n")),
        Some(t) => match t.mode {
            TenancyMode::Key => match t.keys.get(&hash) {
                None => out.push_str(&format!("tenant_id = \"{hash}\"\n")),
                Some(KeyMapping::Named(named)) => out.push_str(&format!(
                    "tenant = \"{}\"\ntenant_id = \"{}\"\n",
                    named.name, named.id
                )),
                Some(KeyMapping::Retired { name }) => out.push_str(&format!(
                    "# retired: tenancy.tenant_ids gives this key's tenant id to tenant {name:?}, \
                     whose [[tenancy.keys]] do not list it; the proxy refuses it\n"
                )),
            },
            TenancyMode::Single => {
                out.push_str("# tenancy.mode is single: every key acts for the one tenant\n");
                out.push_str(&format!("tenant_id = \"{SINGLE_TENANT}\"\n"));
            }
            TenancyMode::Header => out.push_str(&format!(
                "# tenancy.mode is header: the tenant is the {} header's, not the key's\n",
                t.header
            )),
        },
    }
    out
}

fn key_from_stdin(stdin: impl Read) -> Result<String, String> {
    let mut bytes = Vec::new();
    stdin
        .take(MAX_KEY_INPUT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the key from stdin: {e}"))?;
    if bytes.len() as u64 > MAX_KEY_INPUT {
        return Err(format!(
            "stdin holds more than {MAX_KEY_INPUT} bytes: expected one key"
        ));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| "stdin is not UTF-8 text: expected one key".to_owned())?;
    checked_key(&text, "stdin")
}

fn key_from_env(var: &str) -> Result<String, String> {
    match std::env::var(var) {
        Ok(text) => checked_key(&text, &format!("environment variable {var}")),
        Err(std::env::VarError::NotPresent) => Err(format!(
            "environment variable {var} is not set: export the key there (or name another \
             variable with --key-env), or pipe it in with --stdin"
        )),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!(
            "environment variable {var} is not UTF-8 text: expected one key"
        )),
    }
}

/// The key as a request's bearer would carry it (trimmed, as `bearer` trims it), or why
/// `text` cannot be one. The messages never quote the text: it may be a key.
fn checked_key(text: &str, source: &str) -> Result<String, String> {
    let key = text.trim();
    if key.is_empty() {
        return Err(format!("{source} holds no key (it is empty)"));
    }
    if key.contains(['\n', '\r']) {
        return Err(format!(
            "{source} holds more than one line: expected one key"
        ));
    }
    if !key.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(format!(
            "{source} holds characters an Authorization header cannot carry: expected one key"
        ));
    }
    Ok(key.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_header_on_assistants_routes() {
        let with = |values: &[&str]| {
            let mut h = http::HeaderMap::new();
            for v in values {
                h.append("openai-beta", v.parse().unwrap());
            }
            ApiVersion::required(&h)
        };
        assert_eq!(with(&[]).unwrap(), ApiVersion::V2);
        assert_eq!(with(&["assistants=v2"]).unwrap(), ApiVersion::V2);
        assert_eq!(with(&["assistants=v1"]).unwrap(), ApiVersion::V1);
        assert_eq!(with(&["Assistants=V1"]).unwrap(), ApiVersion::V1);
        assert_eq!(
            with(&["assistants=v2, realtime=v1"]).unwrap(),
            ApiVersion::V2
        );
        assert_eq!(
            with(&["realtime=v1", " assistants=v1 "]).unwrap(),
            ApiVersion::V1
        );
        for bad in [
            &[""][..],
            &["realtime=v1"],
            &["assistants=v3"],
            &["assistants"],
            &["assistants=v1,assistants=v2"],
            &["assistants=v2", "assistants=v1"],
        ] {
            let e = with(bad).unwrap_err();
            assert_eq!(e.code(), Some("invalid_beta"), "{bad:?}");
            assert_eq!(e.status(), 400);
            assert_eq!(e.to_string(), INVALID_BETA);
        }
    }

    #[test]
    fn tenants_hash_keys() {
        let a = key_tenant("sk-a");
        assert_eq!(a, key_tenant("sk-a"));
        assert_ne!(a, key_tenant("sk-b"));
        assert!(!a.contains("sk-a"));
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer  sk-x ".parse().unwrap());
        assert_eq!(bearer(&h), Some("sk-x"));
    }

    #[test]
    fn key_hashes_have_the_configured_form() {
        for key in ["sk-a", "sk-proj-0123456789", "x"] {
            assert!(crate::config::is_key_hash(&key_tenant(key)), "{key}");
        }
    }

    #[test]
    fn keys_read_for_tenant_id() {
        let read = |input: &[u8]| key_from_stdin(input);
        assert_eq!(read(b"sk-abc\n").unwrap(), "sk-abc");
        assert_eq!(read(b"  sk-abc\r\n").unwrap(), "sk-abc");
        assert_eq!(read(b"sk-abc").unwrap(), "sk-abc");
        for (bad, want) in [
            (&b""[..], "holds no key"),
            (b"\n\n", "holds no key"),
            (b"sk-a\nsk-b\n", "more than one line"),
            (b"sk-\x01a", "cannot carry"),
            (b"sk-\xff", "not UTF-8"),
        ] {
            let e = read(bad).unwrap_err();
            assert!(e.contains(want), "{bad:?}: {e}");
            assert!(!e.contains("sk-"), "the message quotes the input: {e}");
        }
        let big = vec![b'a'; MAX_KEY_INPUT as usize + 1];
        assert!(read(&big).unwrap_err().contains("more than"));
    }

    #[test]
    fn tenant_id_reports_the_mapped_tenant() {
        let hash = key_tenant("sk-old");
        assert_eq!(
            key_report("sk-old", None),
            format!("key_hash = \"{hash}\"\ntenant_id = \"{hash}\"\n")
        );
        let file = crate::config::FileConfig::parse(&format!(
            "[[tenancy.keys]]\nkey_hash = \"{hash}\"\ntenant = \"acme\"\n"
        ))
        .unwrap();
        let t = crate::config::resolve_tenancy(file.tenancy).unwrap();
        let report = key_report("sk-old", Some(&t));
        assert_eq!(
            report,
            format!("key_hash = \"{hash}\"\ntenant = \"acme\"\ntenant_id = \"n:acme\"\n")
        );
        assert!(!report.contains("sk-old"));
        let file =
            crate::config::FileConfig::parse(&format!("[tenancy.tenant_ids]\nacme = \"{hash}\"\n"))
                .unwrap();
        let t = crate::config::resolve_tenancy(file.tenancy).unwrap();
        let report = key_report("sk-old", Some(&t));
        assert!(report.contains("# retired"), "{report}");
        assert!(!report.contains("tenant_id ="), "{report}");
        let file = crate::config::FileConfig::parse("[tenancy]\nmode = \"header\"\n").unwrap();
        let t = crate::config::resolve_tenancy(file.tenancy).unwrap();
        let report = key_report("sk-old", Some(&t));
        assert!(report.contains("x-tenant-id header"), "{report}");
        assert!(!report.contains("tenant_id ="), "{report}");
    }

    #[test]
    fn headers_select_a_database() {
        let mut h = HeaderMap::new();
        assert!(astra_target(&h).unwrap().is_none());
        h.insert(
            DATABASE_HEADER,
            "0b6f7d5e-1111-4222-8333-444455556666".parse().unwrap(),
        );
        assert_eq!(astra_target(&h).unwrap_err().status(), 400);
        h.insert(TOKEN_HEADER, "AstraCS:abc".parse().unwrap());
        let t = astra_target(&h).unwrap().unwrap();
        assert_eq!(t.token.expose(), "AstraCS:abc");
        assert_eq!(
            t.database_id.as_deref(),
            Some("0b6f7d5e-1111-4222-8333-444455556666")
        );
        h.insert(DATABASE_HEADER, "../../v2/organizations".parse().unwrap());
        assert_eq!(astra_target(&h).unwrap_err().status(), 400);
        h.remove(DATABASE_HEADER);
        h.insert(TOKEN_HEADER, "   ".parse().unwrap());
        assert_eq!(astra_target(&h).unwrap_err().status(), 401);
    }
}
