//! Passwords: the policy (ASVS V2 / V6), Argon2id hashing off the async executor with bounded
//! concurrency, and the dummy verification that keeps unknown users as slow as known ones.
//!
//! Policy: 8 to 128 characters, any Unicode except control characters, never truncated, no
//! composition rules, refused when on the common-password list (the top of the zxcvbn list, MIT).
//! Hashing: Argon2id, m = 19 MiB, t = 2, p = 1 (ASVS / OWASP's first row), a 16-byte random salt per
//! hash, and an optional pepper kept in the configuration, away from the hashes.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, LazyLock};

use argon2::password_hash::{
    PasswordHash as Phc, PasswordHasher as _, PasswordVerifier as _, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::{OnceCell, Semaphore};

use crate::token::{RandomError, random_bytes};

/// Shortest password accepted when one is set.
pub const MIN_CHARS: usize = 8;
/// Longest password accepted; longer ones are refused, never truncated.
pub const MAX_CHARS: usize = 128;

static COMMON: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("common-passwords.txt").lines().collect());

/// A password in memory. `Debug` never shows it.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Wraps untrusted text without judging it (for login attempts).
    pub fn new(text: String) -> Self {
        Self(text)
    }

    /// The text, for hashing only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Checks the policy for a password being set.
    pub fn check_policy(&self) -> Result<(), PolicyError> {
        let chars = self.0.chars().count();
        if chars < MIN_CHARS {
            return Err(PolicyError::TooShort);
        }
        if chars > MAX_CHARS {
            return Err(PolicyError::TooLong);
        }
        if self.0.chars().any(char::is_control) {
            return Err(PolicyError::ControlCharacter);
        }
        if COMMON.contains(self.0.to_lowercase().as_str()) {
            return Err(PolicyError::Common);
        }
        Ok(())
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Why a new password was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Fewer than 8 characters.
    #[error("the password must have at least 8 characters")]
    TooShort,
    /// More than 128 characters.
    #[error("the password must have at most 128 characters")]
    TooLong,
    /// Contains a control character (newline, tab, NUL, …).
    #[error("the password must not contain control characters")]
    ControlCharacter,
    /// On the list of common passwords.
    #[error("this password is too common; choose another")]
    Common,
}

/// An Argon2 PHC string as stored. `Debug` shows only its parameters.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Wraps a stored PHC string.
    pub fn from_stored(phc: String) -> Self {
        Self(phc)
    }

    /// The PHC string, for the store.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params = self.0.split('$').take(4).collect::<Vec<_>>().join("$");
        write!(f, "PasswordHash({params}$…)")
    }
}

/// The outcome of a verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verified {
    /// The password matches; `rehash` when the stored hash uses older parameters.
    Yes {
        /// Whether the hash should be replaced by one with the current parameters.
        rehash: bool,
    },
    /// It does not match, there was no user, or the stored hash was unreadable.
    No,
}

/// Hashing failed for a reason other than a wrong password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// No randomness for the salt.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// The Argon2 implementation refused the input or parameters.
    #[error("argon2 failed: {0}")]
    Argon2(String),
    /// The blocking task was cancelled or panicked.
    #[error("password hashing task failed")]
    Task,
}

/// Argon2id parameters: memory in KiB, iterations, lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cost {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Parallelism.
    pub p: u32,
}

impl Cost {
    /// ASVS / OWASP: m = 19 MiB, t = 2, p = 1.
    pub const ASVS: Cost = Cost { m_kib: 19 * 1024, t: 2, p: 1 };
    /// For tests only: far too cheap for real passwords.
    pub const INSECURE_TEST: Cost = Cost { m_kib: 64, t: 1, p: 1 };
}

/// Hashes and verifies passwords on threads of its own, at most `concurrency` at a time, so that a
/// login storm queues here instead of starving the executor that serves session checks. The
/// threads run at a lower scheduling priority (a higher nice value, [`PasswordHasher::with_niceness`])
/// than the rest of the process: on a busy machine the kernel gives the checks that every app
/// waits on the CPU first, and Argon2 the rest; on an idle one hashing runs at full speed.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

/// A job for the hashing threads.
type Job = Box<dyn FnOnce() + Send>;

struct Inner {
    permits: Arc<Semaphore>,
    jobs: std::sync::Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    threads: usize,
    niceness: i32,
    cost: Cost,
    pepper: Option<Vec<u8>>,
    dummy: OnceCell<PasswordHash>,
}

/// The hashing threads' default nice value: well below the checks, never starved (nice 10 gets
/// about a tenth of a contended CPU's time against nice 0, and all of an idle one).
pub const DEFAULT_NICENESS: i32 = 10;

impl Inner {
    /// Hands `job` to the hashing threads, starting them the first time.
    fn submit(&self, job: Job) -> Result<(), HashError> {
        let mut jobs = self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if jobs.is_none() {
            *jobs = Some(self.start()?);
        }
        match jobs.as_ref().map(|tx| tx.send(job)) {
            Some(Ok(())) => Ok(()),
            _ => {
                // Every thread is gone (none should ever be): start afresh next time.
                *jobs = None;
                Err(HashError::Task)
            }
        }
    }

    fn start(&self) -> Result<std::sync::mpsc::Sender<Job>, HashError> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..self.threads {
            let rx = Arc::clone(&rx);
            let niceness = self.niceness;
            std::thread::Builder::new()
                .name(format!("cloakroom-argon2-{i}"))
                .spawn(move || {
                    // Linux applies a nice value to the thread whose id it is given.
                    if niceness > 0 {
                        let me = rustix::thread::gettid();
                        let _ = rustix::process::setpriority_process(Some(me), niceness);
                    }
                    loop {
                        let job =
                            rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|_| HashError::Task)?;
        }
        Ok(tx)
    }
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("cost", &self.inner.cost)
            .field("pepper", &self.inner.pepper.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl PasswordHasher {
    /// A hasher running at most `concurrency` (at least 1) hashes at once.
    pub fn new(cost: Cost, concurrency: usize, pepper: Option<Vec<u8>>) -> Self {
        Self::with_niceness(cost, concurrency, pepper, DEFAULT_NICENESS)
    }

    /// [`PasswordHasher::new`] with the hashing threads' nice value (0 to 19; 0 = the same
    /// priority as everything else). The threads start at the first hash.
    pub fn with_niceness(
        cost: Cost,
        concurrency: usize,
        pepper: Option<Vec<u8>>,
        niceness: i32,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(concurrency.max(1))),
                jobs: std::sync::Mutex::new(None),
                threads: concurrency.max(1),
                niceness: niceness.clamp(0, 19),
                cost,
                pepper,
                dummy: OnceCell::new(),
            }),
        }
    }

    /// Hashes a new password with a fresh salt. The caller checks the policy first.
    pub async fn hash(&self, password: &Password) -> Result<PasswordHash, HashError> {
        let mut salt = [0u8; 16];
        random_bytes(&mut salt)?;
        let inner = Arc::clone(&self.inner);
        let password = password.clone();
        self.blocking(move || {
            let salt =
                SaltString::encode_b64(&salt).map_err(|e| HashError::Argon2(e.to_string()))?;
            let phc = inner
                .argon2()?
                .hash_password(password.expose().as_bytes(), &salt)
                .map_err(|e| HashError::Argon2(e.to_string()))?;
            Ok(PasswordHash(phc.to_string()))
        })
        .await
    }

    /// Verifies `password` against `stored`; with `None` (no such user, or no password set) it
    /// verifies against a dummy hash of the same cost and answers [`Verified::No`], so the time
    /// taken does not reveal whether the account exists.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&PasswordHash>,
    ) -> Result<Verified, HashError> {
        let (target, real) = match stored {
            Some(h) => (h.clone(), true),
            None => (self.dummy().await?.clone(), false),
        };
        let inner = Arc::clone(&self.inner);
        let password = password.clone();
        self.blocking(move || {
            let Ok(phc) = Phc::new(target.as_str()) else {
                return Ok(Verified::No);
            };
            let matches =
                inner.argon2()?.verify_password(password.expose().as_bytes(), &phc).is_ok();
            if !(matches && real) {
                return Ok(Verified::No);
            }
            Ok(Verified::Yes { rehash: !inner.is_current(&phc) })
        })
        .await
    }

    async fn dummy(&self) -> Result<&PasswordHash, HashError> {
        self.inner
            .dummy
            .get_or_try_init(|| async {
                let mut random = [0u8; 24];
                random_bytes(&mut random)?;
                let text: String = random.iter().map(|b| format!("{b:02x}")).collect();
                self.hash(&Password::new(text)).await
            })
            .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        // The permit goes with the job, not with the request: a client that disconnects while
        // its hash waits does not free a place while the job still sits in the queue.
        let permit =
            Arc::clone(&self.inner.permits).acquire_owned().await.map_err(|_| HashError::Task)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(work());
            drop(permit);
        });
        self.inner.submit(job)?;
        rx.await.map_err(|_| HashError::Task)?
    }
}

impl Inner {
    fn argon2(&self) -> Result<Argon2<'_>, HashError> {
        let params = Params::new(self.cost.m_kib, self.cost.t, self.cost.p, None)
            .map_err(|e| HashError::Argon2(e.to_string()))?;
        match &self.pepper {
            Some(p) => Argon2::new_with_secret(p, Algorithm::Argon2id, Version::V0x13, params)
                .map_err(|e| HashError::Argon2(e.to_string())),
            None => Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params)),
        }
    }

    fn is_current(&self, phc: &Phc<'_>) -> bool {
        let Ok(params) = Params::try_from(phc) else {
            return false;
        };
        phc.algorithm.as_str() == "argon2id"
            && phc.version == Some(0x13)
            && params.m_cost() == self.cost.m_kib
            && params.t_cost() == self.cost.t
            && params.p_cost() == self.cost.p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(s: &str) -> Password {
        Password::new(s.to_owned())
    }

    #[test]
    fn policy_counts_characters_not_bytes_and_never_truncates() {
        assert_eq!(pw("short").check_policy(), Err(PolicyError::TooShort));
        assert!(pw("ééééééé").check_policy().is_err()); // 7 chars, 14 bytes
        assert!(pw("correct horse battery").check_policy().is_ok());
        assert!(pw("пароль-надёжный").check_policy().is_ok());
        assert!(pw(&"x".repeat(128)).check_policy().is_ok());
        assert_eq!(pw(&"x".repeat(129)).check_policy(), Err(PolicyError::TooLong));
        assert_eq!(pw("tab\there-long").check_policy(), Err(PolicyError::ControlCharacter));
    }

    #[test]
    fn common_passwords_are_refused_case_insensitively() {
        assert_eq!(pw("password").check_policy(), Err(PolicyError::Common));
        assert_eq!(pw("Password1").check_policy(), Err(PolicyError::Common));
        assert_eq!(pw("qwertyuiop").check_policy(), Err(PolicyError::Common));
    }

    /// The nice values of this process's hashing threads, read from `/proc`.
    fn hashing_thread_niceness() -> Vec<i32> {
        let mut out = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let dir = task.unwrap().path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if !comm.starts_with("cloakroom-argon") {
                continue;
            }
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
            // After the parenthesised name: state is field 3, nice field 19.
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            out.push(rest.split(' ').nth(16).unwrap().parse().unwrap());
        }
        out
    }

    /// Checks wait on the CPU behind Argon2 no more: the hashing threads run niced.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_runs_on_threads_of_lower_priority() {
        let hasher = PasswordHasher::with_niceness(Cost::INSECURE_TEST, 2, None, 7);
        let pw = Password::new("correct horse battery staple".into());
        let hash = hasher.hash(&pw).await.unwrap();
        assert!(matches!(hasher.verify(&pw, Some(&hash)).await.unwrap(), Verified::Yes { .. }));
        let nice = hashing_thread_niceness();
        assert!(!nice.is_empty(), "no hashing thread found: {nice:?}");
        assert!(nice.iter().all(|n| *n == 7 || *n == DEFAULT_NICENESS), "{nice:?}");
        assert!(nice.contains(&7), "{nice:?}");
    }

    #[tokio::test]
    async fn hash_and_verify_argon2id() {
        let h = PasswordHasher::new(Cost::INSECURE_TEST, 2, None);
        let hash = h.hash(&pw("correct horse battery")).await.unwrap();
        assert!(hash.as_str().starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(!format!("{hash:?}").contains(&hash.as_str()[30..]));
        assert_eq!(
            h.verify(&pw("correct horse battery"), Some(&hash)).await.unwrap(),
            Verified::Yes { rehash: false }
        );
        assert_eq!(h.verify(&pw("correct horse batter"), Some(&hash)).await.unwrap(), Verified::No);
        // Two hashes of one password differ (unique salts).
        assert_ne!(h.hash(&pw("correct horse battery")).await.unwrap(), hash);
    }

    #[tokio::test]
    async fn unknown_user_never_verifies() {
        let h = PasswordHasher::new(Cost::INSECURE_TEST, 1, None);
        assert_eq!(h.verify(&pw("anything at all"), None).await.unwrap(), Verified::No);
        let garbage = PasswordHash::from_stored("not a phc string".into());
        assert_eq!(h.verify(&pw("anything at all"), Some(&garbage)).await.unwrap(), Verified::No);
    }

    #[tokio::test]
    async fn changed_parameters_ask_for_a_rehash() {
        let old = PasswordHasher::new(Cost { m_kib: 32, t: 1, p: 1 }, 1, None);
        let hash = old.hash(&pw("correct horse battery")).await.unwrap();
        let new = PasswordHasher::new(Cost::INSECURE_TEST, 1, None);
        assert_eq!(
            new.verify(&pw("correct horse battery"), Some(&hash)).await.unwrap(),
            Verified::Yes { rehash: true }
        );
    }

    #[tokio::test]
    async fn pepper_is_required_to_verify() {
        let peppered =
            PasswordHasher::new(Cost::INSECURE_TEST, 1, Some(b"pepper-from-config".to_vec()));
        let hash = peppered.hash(&pw("correct horse battery")).await.unwrap();
        let plain = PasswordHasher::new(Cost::INSECURE_TEST, 1, None);
        assert_eq!(
            plain.verify(&pw("correct horse battery"), Some(&hash)).await.unwrap(),
            Verified::No
        );
        assert!(matches!(
            peppered.verify(&pw("correct horse battery"), Some(&hash)).await.unwrap(),
            Verified::Yes { .. }
        ));
    }
}
