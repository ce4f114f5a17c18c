//! Credentials asked of the application for each new connection (a password provider or an
//! options provider, see [`PoolBuilder::password_provider`](crate::PoolBuilder::password_provider)),
//! reused for a refresh interval and forgotten when the server refuses them.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_core::future::BoxFuture;
use futures_util::future::{FutureExt, Shared};

use crate::config::ConnectOptions;
use crate::error::{Error, ErrorKind, Result};
use crate::executor::{maybe_timeout, SharedExecutor};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a provider answers.
pub(crate) enum Provided {
    /// The password for the DSN's other settings.
    Password(String),
    /// Every setting.
    Options(Box<ConnectOptions>),
}

impl fmt::Debug for Provided {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provided::Password(_) => f.write_str("Password(<redacted>)"),
            Provided::Options(o) => f.debug_tuple("Options").field(o).finish(),
        }
    }
}

/// One request to the provider, shared by the connects that start while it runs or while its
/// answer is fresh. The error is the provider's message (errors are not `Clone`).
type Answer = Shared<BoxFuture<'static, std::result::Result<Arc<Provided>, Arc<str>>>>;

struct Cached {
    answer: Answer,
    /// When it was asked.
    asked: Instant,
    /// Numbers the requests, so that a refused answer is forgotten only if no newer one
    /// replaced it.
    generation: u64,
}

/// A credential provider with its cache.
pub(crate) struct Credentials {
    provider:
        Box<dyn Fn() -> BoxFuture<'static, std::result::Result<Provided, BoxError>> + Send + Sync>,
    refresh: Duration,
    cache: Mutex<(Option<Cached>, u64)>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("refresh", &self.refresh)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub(crate) fn new<F, Fut>(provider: F) -> Credentials
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<Provided, BoxError>> + Send + 'static,
    {
        Credentials {
            provider: Box::new(move || Box::pin(provider())),
            refresh: Duration::ZERO,
            cache: Mutex::new((None, 0)),
        }
    }

    /// Sets how long an answer is reused.
    pub(crate) fn refresh(mut self, refresh: Duration) -> Credentials {
        self.refresh = refresh;
        self
    }

    /// The options for a new connection: `base` with the provider's password, or the provider's
    /// options (with `base`'s connect timeout when they have none), and the generation of the
    /// answer (for [`forget`](Credentials::forget)). The provider may take as long as the
    /// connect timeout.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Connect`] with the provider's message when it failed, panicked or took too
    /// long.
    pub(crate) async fn options(
        &self,
        base: &ConnectOptions,
        executor: &SharedExecutor,
    ) -> Result<(ConnectOptions, u64)> {
        let (answer, generation) = self.answer(executor.now());
        let limit = base.get_connect_timeout();
        let provided = match maybe_timeout(&**executor, limit, answer).await {
            Ok(Ok(p)) => p,
            Ok(Err(message)) => {
                return Err(Error::new(
                    ErrorKind::Connect,
                    format!("the credential provider failed: {message}"),
                ))
            }
            Err(_) => {
                // Forget the request that hangs: the next connect asks again.
                self.forget(generation);
                return Err(Error::new(
                    ErrorKind::Connect,
                    format!(
                        "the credential provider did not answer within the connect timeout ({:?})",
                        limit.unwrap_or_default()
                    ),
                ));
            }
        };
        let options = match &*provided {
            Provided::Password(password) => base.clone().password(password),
            Provided::Options(options) => {
                let mut options = (**options).clone();
                if let (None, Some(t)) = (options.get_connect_timeout(), limit) {
                    options = options.connect_timeout(t);
                }
                options
            }
        };
        Ok((options, generation))
    }

    /// The answer to use now: the cached one while it is running or fresh and did not fail,
    /// else a new request.
    fn answer(&self, now: Instant) -> (Answer, u64) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = &cache.0 {
            let failed = matches!(c.answer.peek(), Some(Err(_)));
            let running = c.answer.peek().is_none();
            let fresh = now.saturating_duration_since(c.asked) < self.refresh;
            if !failed && (running || fresh) {
                return (c.answer.clone(), c.generation);
            }
        }
        cache.1 += 1;
        let generation = cache.1;
        // The provider's own code runs on the pool's tasks: a panic in it becomes its error.
        let request = std::panic::catch_unwind(AssertUnwindSafe(|| (self.provider)()));
        let answer: BoxFuture<'static, _> = Box::pin(async move {
            let Ok(request) = request else {
                return Err(Arc::<str>::from("it panicked"));
            };
            match AssertUnwindSafe(request).catch_unwind().await {
                Ok(Ok(p)) => Ok(Arc::new(p)),
                Ok(Err(e)) => Err(Arc::<str>::from(e.to_string())),
                Err(_) => Err(Arc::<str>::from("it panicked")),
            }
        });
        let answer = answer.shared();
        cache.0 = Some(Cached {
            answer: answer.clone(),
            asked: now,
            generation,
        });
        (answer, generation)
    }

    /// Forgets the cached answer, whichever it is: the next connect asks again.
    pub(crate) fn forget_all(&self) {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).0 = None;
    }

    /// The answer of `generation` was refused by the server (or never came): the next connect
    /// asks again.
    pub(crate) fn forget(&self, generation: u64) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.0.as_ref().is_some_and(|c| c.generation == generation) {
            cache.0 = None;
        }
    }
}
