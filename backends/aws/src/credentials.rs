//! Resolving credentials before the first call, and saying where we looked when there are none.
//!
//! The SDK resolves credentials lazily, at the first request, and reports a missing one as a
//! dispatch failure carrying a kilobyte of debug output. Resolving them once when connecting
//! turns that into one message naming each source of the standard chain, in the chain's
//! order, with what was found there, and a hint on how to provide one. The descriptions read
//! the same variables and files the chain reads; they describe, they do not decide.

use std::path::{Path, PathBuf};

use aws_credential_types::provider::error::CredentialsError;

/// Why no credentials could be used: the message and the hint of the error.
#[derive(Debug)]
pub struct Unresolved {
    /// What went wrong, naming the sources tried.
    pub message: String,
    /// How to provide credentials.
    pub hint: String,
}

/// The hint for a host without credentials: the three usual ways, and the systemd detail
/// that hides a profile under /root.
pub const HINT: &str = "attach an instance role (on EC2), set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (under systemd: EnvironmentFile= in a drop-in), or write a profile to ~/.aws/credentials (the shipped units hide /root unless the aws drop-in is installed; see packaging/systemd)";

/// Describes a failed resolution; `env` reads an environment variable.
pub fn unresolved(error: &CredentialsError, env: &dyn Fn(&str) -> Option<String>) -> Unresolved {
    let message = match error {
        CredentialsError::CredentialsNotLoaded(_) => format!(
            "no AWS credentials found; tried in order: {}",
            sources_tried(env).join("; ")
        ),
        other => format!(
            "the AWS credentials could not be loaded: {}",
            chain_of(other)
        ),
    };
    Unresolved {
        message,
        hint: HINT.to_owned(),
    }
}

/// Each source of the standard chain, with what it found.
pub fn sources_tried(env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let set = |name: &str| env(name).is_some_and(|value| !value.is_empty());
    let mut tried = Vec::new();
    tried.push(
        match (set("AWS_ACCESS_KEY_ID"), set("AWS_SECRET_ACCESS_KEY")) {
            (false, false) => "environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY unset)",
            (true, false) => "environment (AWS_SECRET_ACCESS_KEY unset)",
            (false, true) => "environment (AWS_ACCESS_KEY_ID unset)",
            (true, true) => "environment (set, but refused)",
        }
        .to_owned(),
    );
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".to_owned());
    let home = env("HOME").map(PathBuf::from);
    let file = |variable: &str, name: &str| -> String {
        let path = env(variable)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|home| home.join(".aws").join(name)));
        match path {
            Some(path) => format!("{} {}", path.display(), file_state(&path, &profile)),
            None => format!("~/.aws/{name} (HOME unset)"),
        }
    };
    tried.push(format!(
        "profile {profile:?} in {}, {}",
        file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
        file("AWS_CONFIG_FILE", "config")
    ));
    if !set("AWS_WEB_IDENTITY_TOKEN_FILE") {
        tried.push("web identity (AWS_WEB_IDENTITY_TOKEN_FILE unset)".to_owned());
    } else {
        tried.push("web identity (its token was refused)".to_owned());
    }
    if !set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") && !set("AWS_CONTAINER_CREDENTIALS_FULL_URI")
    {
        tried.push("container endpoint (unset)".to_owned());
    } else {
        tried.push("container endpoint (no credentials)".to_owned());
    }
    let disabled =
        env("AWS_EC2_METADATA_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true"));
    tried.push(if disabled {
        "instance metadata (disabled by AWS_EC2_METADATA_DISABLED)".to_owned()
    } else {
        "instance metadata (no answer, or no role attached)".to_owned()
    });
    tried
}

/// What a shared file holds of the profile: missing, unreadable, without it, or with it.
fn file_state(path: &Path, profile: &str) -> &'static str {
    match std::fs::read_to_string(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => "(missing)",
        Err(_) => "(unreadable)",
        Ok(text) => {
            let headers = [format!("[{profile}]"), format!("[profile {profile}]")];
            if text
                .lines()
                .any(|line| headers.iter().any(|header| line.trim() == header))
            {
                "(has the profile, without usable keys)"
            } else {
                "(no such profile)"
            }
        }
    }
}

/// An error and its causes, as one line without debug output.
fn chain_of(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_of_the_chain_is_named_with_what_it_found() {
        let home = tempfile_dir();
        std::fs::create_dir_all(home.join(".aws")).unwrap();
        std::fs::write(home.join(".aws/config"), "[profile other]\nregion = x\n").unwrap();
        let home_text = home.display().to_string();
        let env = |name: &str| match name {
            "HOME" => Some(home_text.clone()),
            "AWS_ACCESS_KEY_ID" => Some("AKID".to_owned()),
            _ => None,
        };
        let tried = sources_tried(&env);
        assert_eq!(
            tried,
            [
                "environment (AWS_SECRET_ACCESS_KEY unset)".to_owned(),
                format!(
                    "profile \"default\" in {home_text}/.aws/credentials (missing), {home_text}/.aws/config (no such profile)"
                ),
                "web identity (AWS_WEB_IDENTITY_TOKEN_FILE unset)".to_owned(),
                "container endpoint (unset)".to_owned(),
                "instance metadata (no answer, or no role attached)".to_owned(),
            ]
        );
        std::fs::remove_dir_all(home).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cf-allowlist-aws-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
