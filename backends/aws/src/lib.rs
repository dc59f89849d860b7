//! The AWS backend: security groups whose inbound rules are kept equal to the ranges.
//!
//! A security group denies by default, so allowing Cloudflare is all there is to do: restrict
//! has no meaning here and is refused at config load. In rules mode each configured group
//! holds one inbound rule per range and port, described [`names::RULE_DESCRIPTION`]; in
//! prefix-list mode the ranges live in two customer-managed prefix lists
//! ([`names::prefix_list_name`]) that each group references once per port, so one list can
//! serve a whole fleet. Rules whose description does not start with [`names::OWNER_TAG`] are
//! somebody else's and are never revoked.
//!
//! EC2 has no transactions, so an apply is a short sequence of batched calls in a safe order:
//! list changes, then authorizations, then revocations by rule id (never by position), each
//! batch one call per group. It re-reads first and refuses a stale plan, checks the quota
//! before the first write, and reads back with a bounded retry because EC2 is eventually
//! consistent. The SDK is async; the backend drives it on its own single-threaded tokio
//! runtime, so the core stays synchronous.

mod credentials;
mod ec2;
#[cfg(feature = "harness")]
pub mod harness;
mod model;
pub mod names;
mod registry;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use aws_sdk_ec2::Client;
use cf_allowlist_backend::{
    Backend, BackendError, Change, ErrorKind, Family, Observed, Policy, Ranges,
};
use serde::{Deserialize, Serialize};

use ec2::{AwsError, ListChange};
use model::{ListWrite, Live, Writes};

pub use ec2::LIST_CONFLICT;

const LABEL: &str = "aws";

/// The default inbound rule quota per group and family (AWS's default).
pub const DEFAULT_MAX_RULES: usize = 60;

/// How many times a prefix-list change is re-read and retried after a version conflict.
pub const LIST_ATTEMPTS: usize = 4;

/// How many reads the read-back after an apply makes before giving up on EC2 catching up.
pub const READ_BACK_ATTEMPTS: u32 = 6;

/// Where the ranges live in the groups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// One inbound rule per range and port in every group.
    #[default]
    Rules,
    /// Two customer-managed prefix lists, each referenced once per port by every group.
    PrefixList,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Rules => "rules",
            Mode::PrefixList => "prefix-list",
        })
    }
}

/// The `[[backend]]` options of `kind = "aws"`, beyond ports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsOptions {
    /// The groups to keep (`sg-…`), all in one region.
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    /// The region; default: the standard chain (`AWS_REGION`, the profile, the instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Rules or prefix lists.
    #[serde(default)]
    pub mode: Mode,
    /// The inbound rule quota per group and family; default 60 (AWS's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rules: Option<usize>,
}

impl AwsOptions {
    /// Checks the options and the policy at config load: at least one group, ids that look
    /// like group ids, no restrict.
    pub fn check(&self, policy: &Policy) -> Result<(), String> {
        if self.security_group_ids.is_empty() {
            return Err(
                "security_group_ids must name at least one security group (sg-…)".to_owned(),
            );
        }
        for id in &self.security_group_ids {
            let valid = id.strip_prefix("sg-").is_some_and(|rest| {
                !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric())
            });
            if !valid {
                return Err(format!("{id:?} is not a security group id (sg-…)"));
            }
        }
        if policy.restrict {
            return Err("restrict has no meaning for a security group, which denies everything it does not allow: remove `restrict` for this backend".to_owned());
        }
        if self.max_rules == Some(0) {
            return Err("max_rules must be at least 1".to_owned());
        }
        Ok(())
    }

    /// The quota per group and family.
    pub fn max_rules(&self) -> usize {
        self.max_rules.unwrap_or(DEFAULT_MAX_RULES)
    }
}

/// How to reach EC2 when not through the standard chain alone (tests, or a wrapper that
/// already holds credentials).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connection {
    /// An endpoint instead of EC2's (the standard `AWS_ENDPOINT_URL` also works).
    pub endpoint_url: Option<String>,
    /// Static credentials (access key id, secret) instead of the standard chain.
    pub static_credentials: Option<(String, String)>,
}

/// A hook the test harness sets to see the firewall after every write of an apply.
#[cfg(feature = "harness")]
pub type StateRecorder = std::sync::Arc<std::sync::Mutex<Option<Vec<Ranges>>>>;

/// Keeps security groups open to a set of ranges.
pub struct AwsBackend {
    options: AwsOptions,
    policy: Policy,
    connection: Connection,
    connected: OnceLock<Connected>,
    #[cfg(feature = "harness")]
    recorder: Option<StateRecorder>,
}

struct Connected {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl std::fmt::Debug for AwsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsBackend")
            .field("options", &self.options)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Why no client could be built: no region, no credentials, no runtime.
#[derive(Debug)]
pub struct ConnectError {
    /// What went wrong.
    pub message: String,
    /// What kind of failure it is.
    pub kind: ErrorKind,
    /// What the user can do.
    pub hint: Option<String>,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Builds an EC2 client on a new single-threaded runtime: rustls on `ring` (the crypto provider
/// the fetcher already uses), the standard credential, region and endpoint chain, retries with
/// backoff, and timeouts. Credentials are resolved here, before any call, so that a host
/// without them gets one message naming the sources tried.
pub fn connect(
    region: Option<&str>,
    connection: &Connection,
) -> Result<(tokio::runtime::Runtime, Client), ConnectError> {
    use aws_sdk_ec2::config::ProvideCredentials;
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| ConnectError {
            message: format!("could not start the async runtime: {error}"),
            kind: ErrorKind::Transient,
            hint: None,
        })?;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(5))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(Duration::from_secs(30))
                .operation_timeout(Duration::from_secs(120))
                .build(),
        );
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_owned()));
    }
    if let Some(url) = &connection.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some((key, secret)) = &connection.static_credentials {
        loader = loader.credentials_provider(aws_sdk_ec2::config::Credentials::new(
            key, secret, None, None, "static",
        ));
    }
    let config = runtime.block_on(loader.load());
    if config.region().is_none() {
        return Err(ConnectError {
            message: "no AWS region is configured".to_owned(),
            kind: ErrorKind::Rejected,
            hint: Some("set `region` in the [[backend]] table, or AWS_REGION".to_owned()),
        });
    }
    if let Some(provider) = config.credentials_provider()
        && let Err(error) = runtime.block_on(provider.provide_credentials())
    {
        let unresolved = credentials::unresolved(&error, &|name| std::env::var(name).ok());
        return Err(ConnectError {
            message: unresolved.message,
            kind: ErrorKind::Credentials,
            hint: Some(unresolved.hint),
        });
    }
    let client = Client::new(&config);
    Ok((runtime, client))
}

/// A failure that is not an EC2 answer: no region, a refused plan, a read-back that differs.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

impl AwsBackend {
    /// A backend for `options` and `policy`, reaching EC2 through the standard chain.
    pub fn new(options: AwsOptions, policy: Policy) -> AwsBackend {
        AwsBackend::connected_to(options, policy, Connection::default())
    }

    /// A backend that reaches EC2 as `connection` says.
    pub fn connected_to(options: AwsOptions, policy: Policy, connection: Connection) -> AwsBackend {
        AwsBackend {
            options,
            policy,
            connection,
            connected: OnceLock::new(),
            #[cfg(feature = "harness")]
            recorder: None,
        }
    }

    /// Records the ranges every group allows after each write of an apply (tests only).
    #[cfg(feature = "harness")]
    pub fn recording_states(mut self, recorder: StateRecorder) -> AwsBackend {
        self.recorder = Some(recorder);
        self
    }

    /// What the groups and our lists hold now, read for `step`.
    fn read_live(&self, step: &'static str) -> Result<model::Live, BackendError> {
        let connected = self.connected(step)?;
        connected
            .runtime
            .block_on(self.read(&connected.client))
            .map_err(|error| wrap(step, error))
    }

    fn connected(&self, step: &'static str) -> Result<&Connected, BackendError> {
        if let Some(connected) = self.connected.get() {
            return Ok(connected);
        }
        let (runtime, client) =
            connect(self.options.region.as_deref(), &self.connection).map_err(|error| {
                BackendError::new(LABEL, step, error.kind, Message(error.message))
                    .with_hint(error.hint)
            })?;
        Ok(self.connected.get_or_init(|| Connected { runtime, client }))
    }

    fn ports(&self) -> &[u16] {
        &self.policy.ports
    }

    async fn read(&self, client: &Client) -> Result<Live, AwsError> {
        let mut live = ec2::read(client, &self.options.security_group_ids).await?;
        if self.options.mode == Mode::Rules && !live.lists.is_empty() {
            live.referenced_elsewhere =
                ec2::references_elsewhere(client, &live.lists, &self.options.security_group_ids)
                    .await?;
        }
        Ok(live)
    }

    /// The writes that bring `live` to `target`, in an order that keeps every group within
    /// its quota at every moment, or the refusal that says why there is none.
    fn fitted(
        &self,
        live: &Live,
        target: &Ranges,
        step: &'static str,
    ) -> Result<Writes, BackendError> {
        let mode = self.options.mode;
        let writes = model::plan_writes(live, mode, self.ports(), target);
        model::fit(
            live,
            writes,
            mode,
            self.ports(),
            target,
            self.options.max_rules(),
        )
        .map_err(|refusal| {
            let hint = refusal.hint(mode);
            BackendError::new(
                LABEL,
                step,
                ErrorKind::Rejected,
                Message(refusal.to_string()),
            )
            .with_hint(Some(hint))
        })
    }

    /// Makes `writes` (planned from `live` towards `target`), in order: lists, then
    /// authorizations, then revocations.
    async fn write(
        &self,
        client: &Client,
        live: &Live,
        writes: &Writes,
        target: &Ranges,
    ) -> Result<(), AwsError> {
        let mut list_ids: BTreeMap<Family, String> = live
            .lists
            .iter()
            .map(|(family, list)| (*family, list.id.clone()))
            .collect();
        for write in &writes.lists {
            match write {
                ListWrite::Create {
                    family,
                    max_entries,
                    entries,
                } => {
                    let (id, _) = ec2::create_list(client, *family, *max_entries, entries).await?;
                    self.after_write(client).await;
                    ec2::wait_until_ready(client, &id).await?;
                    list_ids.insert(*family, id.clone());
                    if entries.len() > ec2::ENTRIES_PER_CALL {
                        self.update_list(client, *family, &id, target, Phase::Both)
                            .await?;
                    }
                }
                ListWrite::Resize { family, id, to, .. } => {
                    self.resize_list(client, *family, id, *to).await?;
                }
                ListWrite::Modify { .. } | ListWrite::Grow { .. } | ListWrite::Delete { .. } => {}
            }
        }
        // One call changes one list atomically; when both lists change, every list's adds go
        // in before any list's removes, so no range is missing while another is not yet in.
        let modified: Vec<(Family, &String)> = writes
            .lists
            .iter()
            .filter_map(|write| match write {
                ListWrite::Modify { family, id, .. } => Some((*family, id)),
                _ => None,
            })
            .collect();
        let phases: &[Phase] = if modified.len() > 1 {
            &[Phase::Add, Phase::Remove]
        } else {
            &[Phase::Both]
        };
        for phase in phases {
            for (family, id) in &modified {
                self.update_list(client, *family, id, target, *phase)
                    .await?;
            }
        }
        for stage in writes.stages(self.ports()) {
            for (group, grants) in &stage.authorize {
                let grants: Vec<model::Grant> =
                    grants.iter().map(|grant| (*grant).clone()).collect();
                ec2::authorize(client, group, &grants, &list_ids).await?;
                self.after_write(client).await;
            }
            for (group, revokes) in &stage.revoke {
                let ids: Vec<String> = revokes.iter().map(|revoke| revoke.id.clone()).collect();
                ec2::revoke(client, group, &ids).await?;
                self.after_write(client).await;
            }
        }
        for write in &writes.lists_after {
            match write {
                ListWrite::Grow { family, to } => {
                    if let Some(id) = list_ids.get(family) {
                        self.resize_list(client, *family, id, *to).await?;
                    }
                }
                ListWrite::Delete { id, .. } => {
                    ec2::delete_list(client, id).await?;
                    self.after_write(client).await;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Brings our list of `family` to the target's ranges of that family against the version
    /// it holds; on a version conflict (another host of the fleet wrote in between) re-reads
    /// and retries, at most [`LIST_ATTEMPTS`] times. Adds go in before removes when more than
    /// one call is needed; one call does both atomically.
    async fn update_list(
        &self,
        client: &Client,
        family: Family,
        id: &str,
        target: &Ranges,
        phase: Phase,
    ) -> Result<(), AwsError> {
        let wanted: std::collections::BTreeSet<ipnet::IpNet> =
            target.family(family).copied().collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let lists = ec2::read_lists(client).await?;
            let Some(list) = lists.get(&family).filter(|list| list.id == id) else {
                return Err(AwsError {
                    operation: "ModifyManagedPrefixList",
                    subject: id.to_owned(),
                    code: None,
                    message: format!(
                        "prefix list {} disappeared during the apply",
                        names::prefix_list_name(family)
                    ),
                    hint: None,
                });
            };
            let mut add: Vec<ipnet::IpNet> = wanted.difference(&list.entries).copied().collect();
            let mut remove: Vec<ipnet::IpNet> = list.entries.difference(&wanted).copied().collect();
            match phase {
                Phase::Add => remove.clear(),
                Phase::Remove => add.clear(),
                Phase::Both => {}
            }
            if add.is_empty() && remove.is_empty() {
                return Ok(());
            }
            let mut version = list.version;
            let result: Result<(), AwsError> = async {
                // One call when the change fits in one; else the additions, then the
                // removals, in chunks, each waited for before the next.
                let in_one_call =
                    add.len() <= ec2::ENTRIES_PER_CALL && remove.len() <= ec2::ENTRIES_PER_CALL;
                let steps: Vec<(&[ipnet::IpNet], &[ipnet::IpNet])> = if in_one_call {
                    vec![(add.as_slice(), remove.as_slice())]
                } else {
                    add.chunks(ec2::ENTRIES_PER_CALL)
                        .map(|chunk| (chunk, &[][..]))
                        .chain(
                            remove
                                .chunks(ec2::ENTRIES_PER_CALL)
                                .map(|chunk| (&[][..], chunk)),
                        )
                        .collect()
                };
                for (add, remove) in steps {
                    version = ec2::modify_list(
                        client,
                        family,
                        id,
                        version,
                        ListChange::Entries { add, remove },
                    )
                    .await?;
                    self.after_write(client).await;
                    if !in_one_call {
                        ec2::wait_until_ready(client, id).await?;
                    }
                }
                Ok(())
            }
            .await;
            match result {
                Err(error) if error.is(&LIST_CONFLICT) && attempt < LIST_ATTEMPTS => {
                    tokio::time::sleep(backoff(attempt as u32)).await;
                }
                Err(mut error) if error.is(&LIST_CONFLICT) => {
                    error.hint = Some(format!(
                        "the list kept changing under us ({LIST_ATTEMPTS} attempts): another host of the fleet may be syncing; run again"
                    ));
                    return Err(error);
                }
                other => return other,
            }
        }
    }

    async fn resize_list(
        &self,
        client: &Client,
        family: Family,
        id: &str,
        max_entries: i32,
    ) -> Result<(), AwsError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let lists = ec2::read_lists(client).await?;
            let version = lists.get(&family).map_or(0, |list| list.version);
            match ec2::modify_list(client, family, id, version, ListChange::Size(max_entries)).await
            {
                Err(error) if error.is(&LIST_CONFLICT) && attempt < LIST_ATTEMPTS => {
                    tokio::time::sleep(backoff(attempt as u32)).await;
                }
                Err(error) => return Err(error),
                Ok(_) => {
                    self.after_write(client).await;
                    return ec2::wait_until_ready(client, id).await;
                }
            }
        }
    }

    /// Reads until EC2 shows `target` in every group (it is eventually consistent), at most
    /// [`READ_BACK_ATTEMPTS`] times with growing pauses.
    async fn read_back(&self, client: &Client, target: &Ranges) -> Result<(), BackendError> {
        let mut differences = Vec::new();
        for attempt in 0..READ_BACK_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let live = self
                .read(client)
                .await
                .map_err(|error| wrap("read the change back", error))?;
            let writes = model::plan_writes(&live, self.options.mode, self.ports(), target);
            if writes.is_empty() {
                return Ok(());
            }
            differences = writes.phrases();
        }
        Err(BackendError::new(
            LABEL,
            "read the change back",
            ErrorKind::Transient,
            Message(format!(
                "after {READ_BACK_ATTEMPTS} reads EC2 still shows differences: {}",
                differences.join("; ")
            )),
        ))
    }

    #[cfg(feature = "harness")]
    async fn after_write(&self, client: &Client) {
        if let Some(recorder) = &self.recorder
            && let Ok(live) = self.read(client).await
        {
            let allowed = live.allowed_everywhere(self.ports());
            recorder
                .lock()
                .expect("recorder lock")
                .get_or_insert_with(Vec::new)
                .push(allowed);
        }
    }

    #[cfg(not(feature = "harness"))]
    async fn after_write(&self, _client: &Client) {}
}

/// Which part of a list change one pass makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Only the additions.
    Add,
    /// Only the removals.
    Remove,
    /// Both, in one atomic call where they fit.
    Both,
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250 * 2u64.pow(attempt.saturating_sub(1).min(4)))
}

/// The backend error for a failed EC2 call; its hint becomes the error's hint.
fn wrap(step: &'static str, mut error: AwsError) -> BackendError {
    let hint = error.hint.take();
    BackendError::new(LABEL, step, error.kind(), error).with_hint(hint)
}

impl Backend for AwsBackend {
    fn label(&self) -> String {
        LABEL.to_owned()
    }

    fn observe(&self) -> Result<Observed, BackendError> {
        let step = "read the security groups";
        let live = self.read_live(step)?;
        let ranges = live.ranges(self.options.mode);
        let repairs = model::plan_writes(&live, self.options.mode, self.ports(), &ranges).phrases();
        let mut warnings = Vec::new();
        if self.options.mode == Mode::PrefixList {
            for (family, list) in &live.lists {
                let max = usize::try_from(list.max_entries).unwrap_or(0);
                if list.entries.len() * 5 > max * 4 {
                    warnings.push(format!(
                        "prefix list {} holds {} of its {max} entries: more ranges upstream resize it, which needs quota room in every group that references it",
                        names::prefix_list_name(*family),
                        list.entries.len()
                    ));
                }
            }
        }
        for (family, groups) in &live.referenced_elsewhere {
            if !groups.is_empty() {
                warnings.push(format!(
                    "prefix list {} is kept: {} outside this config still reference it (hosts of the fleet in prefix-list mode); the first run that finds it unreferenced deletes it",
                    names::prefix_list_name(*family),
                    groups.join(", ")
                ));
            }
        }
        if self.policy.restrict {
            warnings.push(
                "restrict has no meaning for a security group (it denies everything it does not allow): ignored"
                    .to_owned(),
            );
        }
        Ok(Observed {
            ranges,
            repairs,
            warnings,
            basis: live.basis(),
            ..Observed::default()
        })
    }

    fn apply(&self, change: &Change) -> Result<(), BackendError> {
        if change.is_empty() {
            return Ok(());
        }
        let step = "apply the change";
        let connected = self.connected(step)?;
        let client = &connected.client;
        connected.runtime.block_on(async {
            #[cfg(feature = "harness")]
            if let Some(recorder) = &self.recorder {
                *recorder.lock().expect("recorder lock") = None;
            }
            let live = self.read(client).await.map_err(|error| wrap(step, error))?;
            if live.basis() != change.basis {
                return Err(BackendError::stale(
                    LABEL,
                    "our rules or prefix lists changed since they were read; nothing was written",
                ));
            }
            let writes = self.fitted(&live, &change.target, step)?;
            if writes.is_empty() {
                return Ok(());
            }
            self.write(client, &live, &writes, &change.target)
                .await
                .map_err(|error| wrap(step, error))?;
            self.read_back(client, &change.target).await
        })
    }

    fn check(&self, change: &Change) -> Result<(), BackendError> {
        if change.is_empty() {
            return Ok(());
        }
        let step = "check the change";
        let live = self.read_live(step)?;
        self.fitted(&live, &change.target, step).map(|_| ())
    }

    fn purge(&self) -> Result<Vec<String>, BackendError> {
        let step = "purge";
        let connected = self.connected(step)?;
        let client = &connected.client;
        connected.runtime.block_on(async {
            let live = self.read(client).await.map_err(|error| wrap(step, error))?;
            let mut removed = Vec::new();
            for group in &live.groups {
                if group.ours.is_empty() {
                    continue;
                }
                let ids: Vec<String> = group.ours.iter().map(|rule| rule.id.clone()).collect();
                ec2::revoke(client, &group.id, &ids)
                    .await
                    .map_err(|error| wrap(step, error))?;
                removed.push(format!(
                    "revoked {} cf-allowlist rules in {}",
                    ids.len(),
                    group.id
                ));
            }
            for (family, list) in &live.lists {
                ec2::delete_list(client, &list.id)
                    .await
                    .map_err(|error| wrap(step, error))?;
                removed.push(format!(
                    "deleted prefix list {} ({})",
                    names::prefix_list_name(*family),
                    list.id
                ));
            }
            Ok(removed)
        })
    }
}
