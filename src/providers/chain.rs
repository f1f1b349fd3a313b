//! The default hooks: the static `[[users]]` table, then each `[[providers]]` entry in
//! order; the first that knows the user answers.
//!
//! Every login asks its provider (a change in the backend takes effect at the next
//! login), unless the provider has a `cache_ttl_secs`. When a backend fails or times
//! out, the last good answer for that user and target is used if it is at most
//! `stale_if_error_secs` old, with a warning: a database restart costs no logins. With
//! no usable answer the lookup fails, and the client is told that the account service
//! is unavailable, whether or not the name exists.
//!
//! A provider that fails is not skipped for the next one: it might know the user, and
//! the next one answering instead would send the login somewhere the operator did not
//! mean.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sshr_protocol::hostkey::{PrivateKey, PublicKey, MIN_RSA_BITS};
use sshr_protocol::text::Untrusted;

use super::health::{self, Outcome, ProviderHealth, ProviderWatch};
use super::static_table::{StaticTable, StaticTableHooks};
use super::{command, http, postgres, sqlite, Backend};
use crate::config::{Config, ProviderConfig, ProviderKind};
use crate::hooks::{self, HookContext, HookError, Hooks, HooksFactory, Lookup, Upstream};

/// Answers kept per provider, at most; beyond, expired ones are dropped, then all.
const MAX_CACHED: usize = 100_000;

/// The `[[providers]]` of a configuration, opened. Shared by every shard.
pub struct Providers {
    sources: Vec<Source>,
    /// `required_rsa_size`: smaller RSA keys in an answer are left out, with a warning.
    required_rsa_size: usize,
}

/// One provider and its recent answers.
struct Source {
    backend: Arc<dyn Backend>,
    /// `kind` and where, for the log (no secrets).
    name: String,
    /// The `kind` word, the metric label.
    kind: &'static str,
    timeout: Duration,
    cache_ttl: Duration,
    stale_if_error: Duration,
    /// The last good answer per (user, target), when caching or `stale_if_error` is on.
    cache: Mutex<HashMap<(String, Option<String>), Cached>>,
    /// How its lookups went, for `/readyz`.
    health: Arc<ProviderHealth>,
}

#[derive(Clone)]
struct Cached {
    at: Instant,
    lookup: Lookup,
}

impl Providers {
    /// Opens every provider of `config`. Fails only on what the operator must fix (a
    /// file that cannot be created or read, a bad CA file), never because a backend is
    /// down: that is a lookup's problem, handled with `stale_if_error`.
    pub fn open(config: &Config) -> Result<Providers, String> {
        let sources = config
            .providers
            .iter()
            .enumerate()
            .map(|(index, p)| {
                Source::open(p, index)
                    .map_err(|e| format!("provider {} ({}): {e}", index + 1, p.kind.name()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Providers {
            sources,
            required_rsa_size: config.required_rsa_size,
        })
    }

    /// Providers answering from these backends (tests, and embedding programs).
    pub fn from_backends(backends: Vec<(Arc<dyn Backend>, ProviderSettings)>) -> Providers {
        let sources = backends
            .into_iter()
            .map(|(backend, s)| Source::new(backend, s))
            .collect();
        Providers {
            sources,
            required_rsa_size: MIN_RSA_BITS,
        }
    }

    /// Leave RSA keys under `bits` out of the answers (default: OpenSSH's 1024, which
    /// every parsed key has).
    pub fn required_rsa_size(mut self, bits: usize) -> Providers {
        self.required_rsa_size = bits;
        self
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// What the log calls each provider, in order.
    pub fn names(&self) -> Vec<String> {
        self.sources.iter().map(|s| s.name.clone()).collect()
    }

    /// Makes these the providers `watch` reports on (for `/readyz`), from now on; with
    /// `probe`, also asks each of them every [`health::PROBE_INTERVAL`] for
    /// [`health::probe_user`] until another configuration replaces them.
    pub fn report_to(&self, watch: &Arc<ProviderWatch>, probe: bool) {
        let generation = watch.replace(self.sources.iter().map(|s| s.health.clone()).collect());
        if probe && !self.sources.is_empty() {
            let probed = (self.sources.iter())
                .map(|s| (s.backend.clone(), s.health.clone()))
                .collect();
            health::start_probes(watch, generation, probed);
        }
    }

    /// Asks the providers in order. Must be called on a shard: backends run on its
    /// helper threads.
    pub async fn look_up(&self, ctx: &HookContext) -> Result<Lookup, HookError> {
        for source in &self.sources {
            match source.look_up(ctx).await? {
                Lookup::Unknown => continue,
                known => return Ok(self.usable_keys(source, ctx, known)),
            }
        }
        Ok(Lookup::Unknown)
    }

    /// The answer without the RSA keys under `required_rsa_size`, each named in a
    /// warning by its type and fingerprint. (Lines that do not parse were left out, with
    /// their line numbers, when the backend's answer was read: [`super::schema`].)
    fn usable_keys(&self, source: &Source, ctx: &HookContext, lookup: Lookup) -> Lookup {
        let keep = |keys: Vec<PublicKey>| -> Vec<PublicKey> {
            keys.into_iter()
                .filter(|key| {
                    let Err(e) = key.check_rsa_size(self.required_rsa_size) else {
                        return true;
                    };
                    tracing::warn!(
                        provider = %source.name,
                        user = %Untrusted(&ctx.user),
                        key_type = key.algorithm_name(),
                        fingerprint = key.fingerprint().as_str(),
                        reason = %e,
                        "skipping authorized key from provider: RSA key smaller than required_rsa_size"
                    );
                    false
                })
                .collect()
        };
        match lookup {
            Lookup::Found {
                upstream,
                authorized_keys,
            } => Lookup::Found {
                upstream,
                authorized_keys: keep(authorized_keys),
            },
            Lookup::Choose {
                targets,
                authorized_keys,
            } => Lookup::Choose {
                targets,
                authorized_keys: keep(authorized_keys),
            },
            Lookup::Unknown => Lookup::Unknown,
        }
    }
}

/// The timing settings of one provider (see [`ProviderConfig`]).
#[derive(Clone, Copy, Debug)]
pub struct ProviderSettings {
    pub timeout: Duration,
    pub cache_ttl: Duration,
    pub stale_if_error: Duration,
}

impl From<&ProviderConfig> for ProviderSettings {
    fn from(p: &ProviderConfig) -> Self {
        ProviderSettings {
            timeout: p.timeout,
            cache_ttl: p.cache_ttl,
            stale_if_error: p.stale_if_error,
        }
    }
}

impl Source {
    /// The `index`th (from 0) provider of the configuration.
    fn open(p: &ProviderConfig, index: usize) -> Result<Source, String> {
        let backend: Arc<dyn Backend> = match &p.kind {
            ProviderKind::Sqlite { path } => {
                Arc::new(sqlite::Sqlite::open(path)?.timeout(p.timeout))
            }
            ProviderKind::Postgres { url, pool_size } => {
                Arc::new(postgres::Postgres::open(url, *pool_size, p.timeout)?)
            }
            ProviderKind::Http {
                url,
                bearer_token_file,
                ca_file,
            } => Arc::new(http::Http::open(
                url,
                bearer_token_file.as_ref(),
                ca_file.as_ref(),
                p.timeout,
            )?),
            ProviderKind::Command {
                argv,
                max_output_bytes,
            } => Arc::new(command::Command::new(argv, *max_output_bytes, p.timeout)),
        };
        let kind = p.kind.name();
        let name = backend.describe();
        // `sqlite#1 (/var/lib/sshr/sshr.db)`: describe() starts with the kind.
        let place = name.strip_prefix(kind).unwrap_or(&name).trim();
        let health = ProviderHealth::new(format!("{kind}#{} ({place})", index + 1), p.timeout);
        Ok(Source {
            kind,
            health,
            ..Source::new(backend, p.into())
        })
    }

    fn new(backend: Arc<dyn Backend>, s: ProviderSettings) -> Source {
        Source {
            kind: "custom",
            name: backend.describe(),
            health: ProviderHealth::new(backend.describe(), s.timeout),
            backend,
            timeout: s.timeout,
            cache_ttl: s.cache_ttl,
            stale_if_error: s.stale_if_error,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn keeps_answers(&self) -> bool {
        !self.cache_ttl.is_zero() || !self.stale_if_error.is_zero()
    }

    fn cached(&self, key: &(String, Option<String>)) -> Option<Cached> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(key).cloned()
    }

    fn remember(&self, key: (String, Option<String>), lookup: &Lookup, now: Instant) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED && !cache.contains_key(&key) {
            let keep = self.cache_ttl.max(self.stale_if_error);
            cache.retain(|_, c| now.duration_since(c.at) <= keep);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(
            key,
            Cached {
                at: now,
                lookup: lookup.clone(),
            },
        );
    }

    /// One lookup's outcome, in `sshr_provider_lookups_total` (both labels from fixed
    /// sets).
    fn count(&self, result: &'static str) {
        metrics::counter!("sshr_provider_lookups_total", "kind" => self.kind, "result" => result)
            .increment(1);
    }

    async fn look_up(&self, ctx: &HookContext) -> Result<Lookup, HookError> {
        let key = (ctx.user.clone(), ctx.target.clone());
        if !self.cache_ttl.is_zero() {
            if let Some(c) = self.cached(&key) {
                if c.at.elapsed() < self.cache_ttl {
                    self.count("cached");
                    return Ok(c.lookup);
                }
            }
        }
        let backend = self.backend.clone();
        let request = ctx.clone();
        let (health, timeout) = (self.health.clone(), self.timeout);
        let asked = crate::run_blocking(move || {
            let started = Instant::now();
            let result = backend.look_up(&request);
            // Also when the login stopped waiting: a late answer says how slow it was.
            health.record(
                Instant::now(),
                Outcome::of(&result, started.elapsed(), timeout),
            );
            result
        });
        let answer = hooks::with_timeout(self.timeout, asked).await;
        if let Err(HookError::Timeout) = answer {
            self.health.record(Instant::now(), Outcome::TimedOut);
        }
        match answer {
            Ok(lookup) => {
                self.count(match lookup {
                    Lookup::Found { .. } => "found",
                    Lookup::Unknown => "unknown",
                    Lookup::Choose { .. } => "choose",
                });
                if self.keeps_answers() {
                    self.remember(key, &lookup, Instant::now());
                }
                Ok(lookup)
            }
            Err(error) => {
                let stale = self
                    .cached(&key)
                    .filter(|c| c.at.elapsed() <= self.stale_if_error);
                match stale {
                    Some(c) => {
                        self.count("stale");
                        tracing::warn!(
                            provider = %self.name,
                            user = %Untrusted(&ctx.user),
                            error = %error,
                            age_secs = c.at.elapsed().as_secs(),
                            "provider failed: using its last answer for this user (stale_if_error_secs)"
                        );
                        Ok(c.lookup)
                    }
                    None => {
                        self.count("error");
                        tracing::warn!(
                            provider = %self.name,
                            user = %Untrusted(&ctx.user),
                            error = %error,
                            "provider failed and no recent answer is kept: login refused as \"account service unavailable\""
                        );
                        Err(error)
                    }
                }
            }
        }
    }
}

/// Builds the default hooks of `config`: its `[[users]]` table, then its providers, and
/// `upstream_key` for every upstream login. Its providers report to `watch` from now on
/// (one per process, kept across reloads), and are probed if `metrics_listen` is set.
pub fn factory(
    config: &Config,
    upstream_key: Arc<PrivateKey>,
    watch: &Arc<ProviderWatch>,
) -> Result<HooksFactory, String> {
    let table = Arc::new(StaticTable::from_config(config));
    let providers = Arc::new(Providers::open(config)?);
    providers.report_to(watch, config.metrics_listen.is_some());
    Ok(Arc::new(move || {
        // One copy of the key per shard, so sessions can share it as an Rc.
        let key = Rc::new((*upstream_key).clone());
        Rc::new(ChainHooks {
            table: StaticTableHooks::new(table.clone(), key.clone()),
            providers: providers.clone(),
            upstream_key: key,
        }) as Rc<dyn Hooks>
    }))
}

/// The per-shard hooks: the static table, then the providers.
pub struct ChainHooks {
    table: StaticTableHooks,
    providers: Arc<Providers>,
    upstream_key: Rc<PrivateKey>,
}

#[async_trait::async_trait(?Send)]
impl Hooks for ChainHooks {
    async fn look_up(&self, ctx: &HookContext) -> Result<Lookup, HookError> {
        match self.table.look_up(ctx).await? {
            Lookup::Unknown => self.providers.look_up(ctx).await,
            known => Ok(known),
        }
    }

    async fn find_upstream(&self, ctx: &HookContext) -> Result<Option<Upstream>, HookError> {
        Ok(match self.look_up(ctx).await? {
            Lookup::Found { upstream, .. } => Some(upstream),
            Lookup::Unknown | Lookup::Choose { .. } => None,
        })
    }

    async fn fetch_authorized_keys(&self, ctx: &HookContext) -> Result<Vec<PublicKey>, HookError> {
        Ok(match self.look_up(ctx).await? {
            Lookup::Found {
                authorized_keys, ..
            }
            | Lookup::Choose {
                authorized_keys, ..
            } => authorized_keys,
            Lookup::Unknown => Vec::new(),
        })
    }

    async fn fetch_private_key(
        &self,
        _ctx: &HookContext,
        _upstream: &Upstream,
    ) -> Result<Rc<PrivateKey>, HookError> {
        Ok(self.upstream_key.clone())
    }
}

#[cfg(test)]
mod tests {
    use crate::rt::on_shard;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A backend answering from a script the test changes: `Ok(Some(addr))` a user on
    /// `addr`, `Ok(None)` unknown, `Err` an outage. Counts its calls.
    struct Scripted {
        answer: Mutex<Result<Option<String>, HookError>>,
        calls: AtomicUsize,
    }

    impl Scripted {
        fn new(answer: Result<Option<&str>, HookError>) -> Arc<Scripted> {
            Arc::new(Scripted {
                answer: Mutex::new(answer.map(|a| a.map(str::to_owned))),
                calls: AtomicUsize::new(0),
            })
        }
        fn set(&self, answer: Result<Option<&str>, HookError>) {
            *self.answer.lock().unwrap() = answer.map(|a| a.map(str::to_owned));
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Backend for Scripted {
        fn describe(&self) -> String {
            "scripted".into()
        }
        fn look_up(&self, ctx: &HookContext) -> Result<Lookup, HookError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(match self.answer.lock().unwrap().clone()? {
                Some(addr) => Lookup::Found {
                    upstream: Upstream::new(addr, &ctx.user),
                    authorized_keys: Vec::new(),
                },
                None => Lookup::Unknown,
            })
        }
    }

    fn settings(cache_ttl: u64, stale: u64) -> ProviderSettings {
        ProviderSettings {
            timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_millis(cache_ttl),
            stale_if_error: Duration::from_millis(stale),
        }
    }

    fn ctx(user: &str) -> HookContext {
        HookContext::new(user, "192.0.2.1:4000".parse().unwrap(), 1, "SSH-2.0-x")
    }

    fn addr(lookup: Result<Lookup, HookError>) -> Result<Option<String>, HookError> {
        lookup.map(|l| match l {
            Lookup::Found { upstream, .. } => Some(upstream.addr),
            _ => None,
        })
    }

    #[test]
    fn every_login_asks_unless_a_ttl_is_set() {
        on_shard(|| async {
            let backend = Scripted::new(Ok(Some("a:22")));
            let chain = Providers::from_backends(vec![(backend.clone(), settings(0, 0))]);
            for _ in 0..3 {
                assert_eq!(
                    addr(chain.look_up(&ctx("alice")).await),
                    Ok(Some("a:22".into()))
                );
            }
            assert_eq!(backend.calls(), 3);
            backend.set(Ok(Some("b:22")));
            assert_eq!(
                addr(chain.look_up(&ctx("alice")).await),
                Ok(Some("b:22".into()))
            );

            let cached = Scripted::new(Ok(Some("a:22")));
            let chain = Providers::from_backends(vec![(cached.clone(), settings(60_000, 0))]);
            chain.look_up(&ctx("alice")).await.unwrap();
            cached.set(Ok(Some("b:22")));
            assert_eq!(
                addr(chain.look_up(&ctx("alice")).await),
                Ok(Some("a:22".into()))
            );
            assert_eq!(cached.calls(), 1, "answered from the cache");
            // Another user (or target) is its own entry.
            assert_eq!(
                addr(chain.look_up(&ctx("bob")).await),
                Ok(Some("b:22".into()))
            );
        });
    }

    #[test]
    fn an_outage_uses_the_last_answer_within_stale_if_error() {
        on_shard(|| async {
            let backend = Scripted::new(Ok(Some("a:22")));
            let chain = Providers::from_backends(vec![(backend.clone(), settings(0, 300))]);
            chain.look_up(&ctx("alice")).await.unwrap();
            backend.set(Err(HookError::Unavailable("down".into())));
            assert_eq!(
                addr(chain.look_up(&ctx("alice")).await),
                Ok(Some("a:22".into()))
            );
            // No earlier answer: the error.
            assert!(chain.look_up(&ctx("bob")).await.is_err());
            // Too old.
            crate::rt::sleep(Duration::from_millis(350)).await;
            assert_eq!(
                addr(chain.look_up(&ctx("alice")).await),
                Err(HookError::Unavailable("down".into()))
            );
            // Off (0): never stale.
            let off = Scripted::new(Ok(Some("a:22")));
            let chain = Providers::from_backends(vec![(off.clone(), settings(0, 0))]);
            chain.look_up(&ctx("alice")).await.unwrap();
            off.set(Err(HookError::Timeout));
            assert!(chain.look_up(&ctx("alice")).await.is_err());
        });
    }

    #[test]
    fn the_first_that_knows_answers_and_a_failing_one_is_not_skipped() {
        on_shard(|| async {
            let first = Scripted::new(Ok(None));
            let second = Scripted::new(Ok(Some("second:22")));
            let chain = Providers::from_backends(vec![
                (first.clone(), settings(0, 0)),
                (second.clone(), settings(0, 0)),
            ]);
            assert_eq!(
                addr(chain.look_up(&ctx("alice")).await),
                Ok(Some("second:22".into()))
            );
            first.set(Ok(Some("first:22")));
            assert_eq!(
                addr(chain.look_up(&ctx("alice")).await),
                Ok(Some("first:22".into()))
            );
            let calls = second.calls();
            first.set(Err(HookError::Unavailable("down".into())));
            assert!(chain.look_up(&ctx("alice")).await.is_err());
            assert_eq!(second.calls(), calls, "the second was not asked instead");
        });
    }

    #[test]
    fn lookups_and_probes_report_to_the_watch() {
        on_shard(|| async {
            let backend = Scripted::new(Ok(None));
            let chain = Providers::from_backends(vec![(backend.clone(), settings(0, 0))]);
            let watch = ProviderWatch::new();
            chain.report_to(&watch, false);
            assert!(watch.check(Instant::now()).is_err(), "not asked yet");
            chain.look_up(&ctx("alice")).await.unwrap();
            assert_eq!(watch.check(Instant::now()), Ok(()));
            backend.set(Err(HookError::Unavailable("connection refused".into())));
            assert!(chain.look_up(&ctx("alice")).await.is_err());
            assert_eq!(
                watch.check(Instant::now()),
                Err("provider scripted failed: connection refused".into())
            );
            // One user's unusable row is not an outage.
            backend.set(Err(HookError::InvalidData("bad key".into())));
            assert!(chain.look_up(&ctx("alice")).await.is_err());
            assert_eq!(watch.check(Instant::now()), Ok(()));
        });

        // The probe finds a failure without any login, and asks for the reserved name.
        let backend = Scripted::new(Err(HookError::Unavailable("down".into())));
        let chain = Providers::from_backends(vec![(backend.clone(), settings(0, 0))]);
        let watch = ProviderWatch::new();
        chain.report_to(&watch, true);
        let start = Instant::now();
        while watch.check(Instant::now()) != Err("provider scripted failed: down".into()) {
            assert!(start.elapsed() < Duration::from_secs(20), "no probe");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(backend.calls() >= 1);
        // A new configuration ends the old one's probes.
        watch.replace(Vec::new());
        assert_eq!(watch.check(Instant::now()), Ok(()));
    }

    #[test]
    fn a_hung_backend_times_out() {
        struct Hung;
        impl Backend for Hung {
            fn describe(&self) -> String {
                "hung".into()
            }
            fn look_up(&self, _: &HookContext) -> Result<Lookup, HookError> {
                std::thread::sleep(Duration::from_millis(500));
                Ok(Lookup::Unknown)
            }
        }
        on_shard(|| async {
            let mut s = settings(0, 0);
            s.timeout = Duration::from_millis(50);
            let chain = Providers::from_backends(vec![(Arc::new(Hung) as Arc<dyn Backend>, s)]);
            let started = Instant::now();
            assert!(matches!(
                chain.look_up(&ctx("alice")).await,
                Err(HookError::Timeout)
            ));
            assert!(started.elapsed() < Duration::from_millis(400));
        });
    }

    /// A backend answering the same keys for everyone.
    struct Keys(Vec<PublicKey>);

    impl Backend for Keys {
        fn describe(&self) -> String {
            "keys".into()
        }
        fn look_up(&self, ctx: &HookContext) -> Result<Lookup, HookError> {
            Ok(match ctx.target.as_deref() {
                None => Lookup::Found {
                    upstream: Upstream::new("a:22", &ctx.user),
                    authorized_keys: self.0.clone(),
                },
                Some(_) => Lookup::Choose {
                    targets: vec!["web1".into()],
                    authorized_keys: self.0.clone(),
                },
            })
        }
    }

    #[test]
    fn rsa_keys_under_the_required_size_are_left_out_of_answers() {
        const RSA1024: &str = include_str!("../../protocol/tests/data/hostkey/rsa1024.pub");
        let rsa = PublicKey::from_openssh(RSA1024).unwrap();
        let ed = PrivateKey::generate_ed25519(&mut rand_core::OsRng).public();
        let keys = |lookup: Lookup| match lookup {
            Lookup::Found {
                authorized_keys, ..
            }
            | Lookup::Choose {
                authorized_keys, ..
            } => authorized_keys,
            Lookup::Unknown => panic!("unknown"),
        };
        on_shard(|| async {
            let backend = || Arc::new(Keys(vec![rsa.clone(), ed.clone()])) as Arc<dyn Backend>;
            let chain = Providers::from_backends(vec![(backend(), settings(0, 0))]);
            let found = chain.look_up(&ctx("alice")).await.unwrap();
            assert_eq!(keys(found), vec![rsa.clone(), ed.clone()]);

            let chain =
                Providers::from_backends(vec![(backend(), settings(0, 0))]).required_rsa_size(2048);
            let found = chain.look_up(&ctx("alice")).await.unwrap();
            assert_eq!(keys(found), vec![ed.clone()]);
            let choose = chain
                .look_up(&ctx("alice").target(Some("x".into())))
                .await
                .unwrap();
            assert_eq!(keys(choose), vec![ed.clone()]);
        });
    }
}
