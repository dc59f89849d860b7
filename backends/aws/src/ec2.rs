//! The EC2 calls this backend makes, and the reading of their answers into [`Live`].
//!
//! Every call goes through the official SDK (signing, the standard credential and region
//! chain, `AWS_ENDPOINT_URL`, retries with backoff for throttling). Failures become
//! [`AwsError`]s that name the operation, the group or list, and EC2's error code.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    AddPrefixListEntry, Filter, IpPermission, IpRange, Ipv6Range, PrefixListId, PrefixListState,
    RemovePrefixListEntry, ResourceType, Tag, TagSpecification,
};
use cf_allowlist_backend::{ErrorKind, Family};
use ipnet::IpNet;

use crate::model::{Grant, Group, Live, PrefixList, Rule, Source};
use crate::names;

/// Codes EC2 answers when the account is throttled (the SDK has already retried them).
const THROTTLING: [&str; 4] = [
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
];

/// Codes EC2 answers when a prefix list changed since we read it (or is still applying a
/// change): re-read and try again.
pub const LIST_CONFLICT: [&str; 3] = [
    "PrefixListVersionMismatch",
    "IncorrectState",
    "InvalidPrefixListModification",
];

/// At most this many entries go into one prefix-list call (EC2's limit per call).
pub const ENTRIES_PER_CALL: usize = 100;

/// At most this many rules go into one authorize or revoke call.
pub const RULES_PER_CALL: usize = 100;

/// A failed EC2 call.
#[derive(Debug)]
pub struct AwsError {
    /// The EC2 operation.
    pub operation: &'static str,
    /// What it was about: a group or list id, or `the account`.
    pub subject: String,
    /// EC2's error code, when it answered with one.
    pub code: Option<String>,
    /// EC2's message, or what went wrong on the way.
    pub message: String,
    /// What the user can do, if anything.
    pub hint: Option<String>,
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.operation, self.subject)?;
        match &self.code {
            Some(code) => write!(f, " failed with {code}: {}", self.message)?,
            None => write!(f, " failed: {}", self.message)?,
        }
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for AwsError {}

impl AwsError {
    /// The backend error kind: Permission for authorization failures, Transient for
    /// throttling and network trouble, Rejected otherwise.
    pub fn kind(&self) -> ErrorKind {
        match self.code.as_deref() {
            Some("UnauthorizedOperation" | "Blocked" | "OptInRequired") => ErrorKind::Permission,
            Some(
                "AuthFailure"
                | "InvalidClientTokenId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "RequestExpired",
            ) => ErrorKind::Credentials,
            Some(code) if THROTTLING.contains(&code) => ErrorKind::Transient,
            Some(_) => ErrorKind::Rejected,
            None if self.message.contains("credentials") => ErrorKind::Credentials,
            None => ErrorKind::Transient,
        }
    }

    /// Whether EC2 answered with one of `codes`.
    pub fn is(&self, codes: &[&str]) -> bool {
        self.code
            .as_deref()
            .is_some_and(|code| codes.contains(&code))
    }

    fn from_sdk<E, R>(operation: &'static str, subject: &str, error: SdkError<E, R>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: fmt::Debug,
    {
        let code = error.code().map(str::to_owned);
        let message = match (&error, error.message()) {
            (SdkError::ServiceError(_), Some(message)) => message.to_owned(),
            _ => DisplayErrorContext(&error).to_string(),
        };
        let mut error = AwsError {
            operation,
            subject: subject.to_owned(),
            code,
            message,
            hint: None,
        };
        error.hint = match error.code.as_deref() {
            Some("UnauthorizedOperation") => Some(format!(
                "allow ec2:{operation} in the IAM policy of this role or user (docs/backends/aws.md)"
            )),
            Some(
                "AuthFailure"
                | "InvalidClientTokenId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "RequestExpired",
            ) => Some(
                "EC2 refused the credentials: check which ones this host uses (AWS_PROFILE, the environment, the instance role) and the clock"
                    .into(),
            ),
            Some("InvalidGroup.NotFound" | "InvalidGroupId.Malformed") => {
                Some("check security_group_ids and region: a group belongs to one region".into())
            }
            Some(code) if THROTTLING.contains(&code) => {
                Some("EC2 is throttling this account; the next run retries".into())
            }
            None if error.kind() == ErrorKind::Credentials => {
                Some(crate::credentials::HINT.to_owned())
            }
            _ => None,
        };
        error
    }
}

/// Reads the configured groups' inbound rules and our prefix lists.
pub async fn read(client: &Client, group_ids: &[String]) -> Result<Live, AwsError> {
    // DescribeSecurityGroupRules answers an empty list for a missing group; this call fails
    // for it instead, naming it.
    client
        .describe_security_groups()
        .set_group_ids(Some(group_ids.to_vec()))
        .send()
        .await
        .map_err(|error| {
            AwsError::from_sdk("DescribeSecurityGroups", &group_ids.join(", "), error)
        })?;
    let lists = read_lists(client).await?;
    let our_list_ids: BTreeSet<&str> = lists.values().map(|list| list.id.as_str()).collect();
    let mut groups: Vec<Group> = group_ids
        .iter()
        .map(|id| Group {
            id: id.clone(),
            ..Group::default()
        })
        .collect();
    let mut token = None;
    loop {
        let page = client
            .describe_security_group_rules()
            .filters(
                Filter::builder()
                    .name("group-id")
                    .set_values(Some(group_ids.to_vec()))
                    .build(),
            )
            .set_next_token(token)
            .max_results(1000)
            .send()
            .await
            .map_err(|error| {
                AwsError::from_sdk("DescribeSecurityGroupRules", &group_ids.join(", "), error)
            })?;
        for rule in page.security_group_rules() {
            if rule.is_egress().unwrap_or(false) {
                continue;
            }
            let Some(group) = groups
                .iter_mut()
                .find(|group| Some(group.id.as_str()) == rule.group_id())
            else {
                continue;
            };
            let source = if let Some(net) = rule.cidr_ipv4().or(rule.cidr_ipv6()) {
                match net.parse::<IpNet>() {
                    Ok(net) => Source::Cidr(net),
                    Err(_) => Source::Other(net.to_owned()),
                }
            } else if let Some(list) = rule.prefix_list_id() {
                Source::PrefixList(list.to_owned())
            } else {
                Source::Other(
                    rule.referenced_group_info()
                        .and_then(|group| group.group_id())
                        .unwrap_or("unknown")
                        .to_owned(),
                )
            };
            let description = rule.description().unwrap_or_default().to_owned();
            // AWS keeps a reference's description; moto drops it. A reference to one of our
            // lists is ours either way.
            let ours = description.starts_with(names::OWNER_TAG)
                || matches!(&source, Source::PrefixList(id) if our_list_ids.contains(id.as_str()));
            let rule = Rule {
                id: rule.security_group_rule_id().unwrap_or_default().to_owned(),
                protocol: rule.ip_protocol().unwrap_or_default().to_owned(),
                from_port: rule.from_port().unwrap_or(-1),
                to_port: rule.to_port().unwrap_or(-1),
                source,
                description,
            };
            if ours {
                group.ours.push(rule);
            } else {
                group.foreign.push(rule);
            }
        }
        token = next_page_token(page.next_token());
        if token.is_none() {
            break;
        }
    }
    Ok(Live {
        groups,
        lists,
        referenced_elsewhere: BTreeMap::new(),
    })
}

/// The groups outside `group_ids` whose inbound rules reference one of `lists` (read in rules
/// mode, before deleting a list: another host of the fleet may still use it). Reads every
/// inbound rule of the region: EC2 cannot filter rules by the list they reference.
pub async fn references_elsewhere(
    client: &Client,
    lists: &BTreeMap<Family, PrefixList>,
    group_ids: &[String],
) -> Result<BTreeMap<Family, Vec<String>>, AwsError> {
    let mut found: BTreeMap<Family, Vec<String>> = BTreeMap::new();
    if lists.is_empty() {
        return Ok(found);
    }
    let mut token = None;
    loop {
        let page = client
            .describe_security_group_rules()
            .set_next_token(token)
            .max_results(1000)
            .send()
            .await
            .map_err(|error| {
                AwsError::from_sdk("DescribeSecurityGroupRules", "the region", error)
            })?;
        for rule in page.security_group_rules() {
            let (Some(list_id), Some(group)) = (rule.prefix_list_id(), rule.group_id()) else {
                continue;
            };
            if group_ids.iter().any(|ours| ours == group) {
                continue;
            }
            if let Some((family, _)) = lists.iter().find(|(_, list)| list.id == list_id) {
                let groups = found.entry(*family).or_default();
                if !groups.iter().any(|known| known == group) {
                    groups.push(group.to_owned());
                }
            }
        }
        token = next_page_token(page.next_token());
        if token.is_none() {
            break;
        }
    }
    Ok(found)
}

/// The token of a paged answer's next page: `None` on the last page, where AWS may answer
/// an empty token instead of none.
fn next_page_token(token: Option<&str>) -> Option<String> {
    token.filter(|token| !token.is_empty()).map(str::to_owned)
}

/// Our prefix lists, found by name among the account's own lists that are not being deleted.
pub async fn read_lists(client: &Client) -> Result<BTreeMap<Family, PrefixList>, AwsError> {
    let names: Vec<String> = Family::ALL
        .iter()
        .map(|family| names::prefix_list_name(*family).to_owned())
        .collect();
    let mut found = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .describe_managed_prefix_lists()
            .filters(
                Filter::builder()
                    .name("prefix-list-name")
                    .set_values(Some(names.clone()))
                    .build(),
            )
            .set_next_token(token)
            .send()
            .await
            .map_err(|error| {
                AwsError::from_sdk("DescribeManagedPrefixLists", &names.join(", "), error)
            })?;
        found.extend(page.prefix_lists().iter().cloned());
        token = next_page_token(page.next_token());
        if token.is_none() {
            break;
        }
    }
    let mut lists = BTreeMap::new();
    for family in Family::ALL {
        let name = names::prefix_list_name(family);
        let mut candidates: Vec<_> = found
            .iter()
            .filter(|list| {
                list.prefix_list_name() == Some(name)
                    && list.owner_id() != Some("AWS")
                    && !matches!(
                        list.state(),
                        Some(
                            PrefixListState::DeleteComplete
                                | PrefixListState::DeleteInProgress
                                | PrefixListState::DeleteFailed
                        )
                    )
            })
            .collect();
        candidates.sort_by_key(|list| list.prefix_list_id().map(str::to_owned));
        let Some(list) = candidates.first() else {
            continue;
        };
        let id = list.prefix_list_id().unwrap_or_default().to_owned();
        let entries = read_entries(client, &id).await?;
        lists.insert(
            family,
            PrefixList {
                id,
                version: list.version().unwrap_or(0),
                max_entries: list.max_entries().unwrap_or(0),
                entries,
            },
        );
    }
    Ok(lists)
}

async fn read_entries(client: &Client, id: &str) -> Result<BTreeSet<IpNet>, AwsError> {
    let mut entries = BTreeSet::new();
    let mut token = None;
    loop {
        let page = client
            .get_managed_prefix_list_entries()
            .prefix_list_id(id)
            .set_next_token(token)
            .send()
            .await
            .map_err(|error| AwsError::from_sdk("GetManagedPrefixListEntries", id, error))?;
        for entry in page.entries() {
            if let Some(net) = entry.cidr().and_then(|cidr| cidr.parse::<IpNet>().ok()) {
                entries.insert(net);
            }
        }
        token = next_page_token(page.next_token());
        if token.is_none() {
            break;
        }
    }
    Ok(entries)
}

/// Authorizes `grants` in `group` in batched calls (one permission per port, holding every
/// network and list reference for it).
pub async fn authorize(
    client: &Client,
    group: &str,
    grants: &[Grant],
    lists: &BTreeMap<Family, String>,
) -> Result<(), AwsError> {
    #[derive(Default)]
    struct Sources {
        v4: Vec<IpRange>,
        v6: Vec<Ipv6Range>,
        lists: Vec<PrefixListId>,
    }
    for chunk in grants.chunks(RULES_PER_CALL) {
        let mut per_port: BTreeMap<u16, Sources> = BTreeMap::new();
        for grant in chunk {
            match grant {
                Grant::Cidr {
                    net: net @ IpNet::V4(_),
                    port,
                } => {
                    per_port.entry(*port).or_default().v4.push(
                        IpRange::builder()
                            .cidr_ip(net.to_string())
                            .description(names::RULE_DESCRIPTION)
                            .build(),
                    );
                }
                Grant::Cidr {
                    net: net @ IpNet::V6(_),
                    port,
                } => {
                    per_port.entry(*port).or_default().v6.push(
                        Ipv6Range::builder()
                            .cidr_ipv6(net.to_string())
                            .description(names::RULE_DESCRIPTION)
                            .build(),
                    );
                }
                Grant::List { family, port } => {
                    let Some(id) = lists.get(family) else {
                        return Err(AwsError {
                            operation: "AuthorizeSecurityGroupIngress",
                            subject: group.to_owned(),
                            code: None,
                            message: format!(
                                "prefix list {} does not exist",
                                names::prefix_list_name(*family)
                            ),
                            hint: None,
                        });
                    };
                    per_port.entry(*port).or_default().lists.push(
                        PrefixListId::builder()
                            .prefix_list_id(id)
                            .description(names::REFERENCE_DESCRIPTION)
                            .build(),
                    );
                }
            }
        }
        let permissions = per_port
            .into_iter()
            .map(|(port, sources)| {
                IpPermission::builder()
                    .ip_protocol(names::PROTOCOL)
                    .from_port(i32::from(port))
                    .to_port(i32::from(port))
                    .set_ip_ranges(Some(sources.v4))
                    .set_ipv6_ranges(Some(sources.v6))
                    .set_prefix_list_ids(Some(sources.lists))
                    .build()
            })
            .collect();
        client
            .authorize_security_group_ingress()
            .group_id(group)
            .set_ip_permissions(Some(permissions))
            .send()
            .await
            .map_err(|error| AwsError::from_sdk("AuthorizeSecurityGroupIngress", group, error))?;
    }
    Ok(())
}

/// Revokes rules of `group` by id, in batched calls. Returns how many EC2 reported as
/// unknown (already gone: real AWS answers success with `UnknownIpPermissions` for them).
pub async fn revoke(client: &Client, group: &str, rule_ids: &[String]) -> Result<usize, AwsError> {
    let mut unknown = 0;
    for chunk in rule_ids.chunks(RULES_PER_CALL) {
        let answer = client
            .revoke_security_group_ingress()
            .group_id(group)
            .set_security_group_rule_ids(Some(chunk.to_vec()))
            .send()
            .await;
        match answer {
            Ok(answer) => unknown += answer.unknown_ip_permissions().len(),
            // moto (and AWS outside the default VPC) says so with an error instead; the
            // read-back decides whether the rule is really gone.
            Err(error) => {
                let error = AwsError::from_sdk("RevokeSecurityGroupIngress", group, error);
                if error.is(&[
                    "InvalidPermission.NotFound",
                    "InvalidSecurityGroupRuleId.NotFound",
                ]) {
                    unknown += chunk.len();
                } else {
                    return Err(error);
                }
            }
        }
    }
    Ok(unknown)
}

/// Creates our prefix list of `family` with `max_entries` and the first entries (at most
/// [`ENTRIES_PER_CALL`]); returns its id and version.
pub async fn create_list(
    client: &Client,
    family: Family,
    max_entries: i32,
    entries: &[IpNet],
) -> Result<(String, i64), AwsError> {
    let name = names::prefix_list_name(family);
    let created = client
        .create_managed_prefix_list()
        .prefix_list_name(name)
        .address_family(names::address_family(family))
        .max_entries(max_entries)
        .set_entries(Some(
            entries
                .iter()
                .take(ENTRIES_PER_CALL)
                .map(|net| {
                    AddPrefixListEntry::builder()
                        .cidr(net.to_string())
                        .description(names::RULE_DESCRIPTION)
                        .build()
                })
                .collect(),
        ))
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::PrefixList)
                .tags(
                    Tag::builder()
                        .key(names::TAG_KEY)
                        .value(names::tag_value(family))
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .map_err(|error| AwsError::from_sdk("CreateManagedPrefixList", name, error))?;
    let list = created.prefix_list();
    Ok((
        list.and_then(|list| list.prefix_list_id())
            .unwrap_or_default()
            .to_owned(),
        list.and_then(|list| list.version()).unwrap_or(1),
    ))
}

/// Changes our prefix list `id` from `version`: entries or size (never both in one call, as
/// EC2 requires). The name is sent every time: moto erases it otherwise.
pub async fn modify_list(
    client: &Client,
    family: Family,
    id: &str,
    version: i64,
    change: ListChange<'_>,
) -> Result<i64, AwsError> {
    let name = names::prefix_list_name(family);
    let mut request = client
        .modify_managed_prefix_list()
        .prefix_list_id(id)
        .prefix_list_name(name)
        .current_version(version);
    match change {
        ListChange::Entries { add, remove } => {
            for net in add {
                request = request.add_entries(
                    AddPrefixListEntry::builder()
                        .cidr(net.to_string())
                        .description(names::RULE_DESCRIPTION)
                        .build(),
                );
            }
            for net in remove {
                request = request.remove_entries(
                    RemovePrefixListEntry::builder()
                        .cidr(net.to_string())
                        .build(),
                );
            }
        }
        ListChange::Size(max_entries) => request = request.max_entries(max_entries),
    }
    let answer = request
        .send()
        .await
        .map_err(|error| AwsError::from_sdk("ModifyManagedPrefixList", id, error))?;
    Ok(answer
        .prefix_list()
        .and_then(|list| list.version())
        .unwrap_or(version + 1))
}

/// What one ModifyManagedPrefixList call changes.
#[derive(Debug, Clone, Copy)]
pub enum ListChange<'a> {
    /// Entries to add and remove.
    Entries {
        /// To add.
        add: &'a [IpNet],
        /// To remove.
        remove: &'a [IpNet],
    },
    /// A new size.
    Size(i32),
}

/// Deletes our prefix list `id`.
pub async fn delete_list(client: &Client, id: &str) -> Result<(), AwsError> {
    client
        .delete_managed_prefix_list()
        .prefix_list_id(id)
        .send()
        .await
        .map_err(|error| {
            let mut error = AwsError::from_sdk("DeleteManagedPrefixList", id, error);
            if error.hint.is_none() && error.code.is_some() {
                error.hint = Some(
                    "groups outside this config (other hosts of the fleet, other accounts) may still reference the list: purge them first"
                        .into(),
                );
            }
            error
        })?;
    Ok(())
}

/// Waits (boundedly) until our list `id` has finished its last change: EC2 applies a create
/// or modify asynchronously, and refuses the next change or a reference meanwhile.
pub async fn wait_until_ready(client: &Client, id: &str) -> Result<(), AwsError> {
    for attempt in 0..8u32 {
        if attempt > 0 {
            let pause = 250 * 2u64.pow(attempt.min(3));
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        }
        let answer = client
            .describe_managed_prefix_lists()
            .prefix_list_ids(id)
            .send()
            .await
            .map_err(|error| AwsError::from_sdk("DescribeManagedPrefixLists", id, error))?;
        let list = answer.prefix_lists().first();
        match list.and_then(|list| list.state()) {
            Some(
                PrefixListState::CreateInProgress
                | PrefixListState::ModifyInProgress
                | PrefixListState::RestoreInProgress,
            ) => continue,
            Some(
                state @ (PrefixListState::CreateFailed
                | PrefixListState::ModifyFailed
                | PrefixListState::RestoreFailed),
            ) => {
                return Err(AwsError {
                    operation: "ModifyManagedPrefixList",
                    subject: id.to_owned(),
                    code: Some(state.as_str().to_owned()),
                    message: list
                        .and_then(|list| list.state_message())
                        .unwrap_or_default()
                        .to_owned(),
                    hint: Some(
                        "a group referencing the list may lack quota room for its MaxEntries"
                            .into(),
                    ),
                });
            }
            _ => return Ok(()),
        }
    }
    Err(AwsError {
        operation: "DescribeManagedPrefixLists",
        subject: id.to_owned(),
        code: None,
        message: "the list is still being changed".into(),
        hint: Some("run again in a minute".into()),
    })
}
