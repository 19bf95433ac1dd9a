//! Prompts, resources and completions of every upstream, merged into one server's view.
//!
//! Prompt, resource and template *names* carry the same `{upstream}__` prefix as tools, and the
//! agent's allowlist (and a virtual server's choice) applies to those prefixed names exactly as it
//! does to tools. A virtual server with `prefix = false` shows the upstreams' own names; a prompt
//! name two of its upstreams share is then withheld, as a tool name is. Resource *URIs*
//! are left as the upstream gave them: clients validate them as URIs and models quote them, so a
//! rewritten URI would break both. A `resources/read` is routed to the upstream that listed the
//! URI, or else to the upstream whose template matches it (the longest literal prefix wins when
//! several do); when two upstreams list the same URI, the first in configuration order serves it.
//!
//! None of these are actions, but reading, getting and completing pass the gateway's screen
//! before they reach an upstream ([`crate::Gateway::screen_read`]: session state, kill switches,
//! rate limit, policy, journal); this module only finds where each goes. Lists are filtered by
//! the allowlist and not screened.

use rmcp::ErrorData;
use rmcp::model::{
    CompleteRequestParams, CompleteResult, GetPromptRequestParams, GetPromptResponse, Prompt,
    ReadResourceRequestParams, ReadResourceResponse, Reference, Resource, ResourceTemplate,
};

use crate::front::TOOL_SEPARATOR;
use crate::upstream::{UpstreamError, Upstreams};

/// Whether the agent may see a prefixed name.
pub type Admits<'a> = &'a (dyn Fn(&str) -> bool + Send + Sync);

/// How one caller's endpoint shows names: which it may see, and in which form.
#[derive(Clone, Copy)]
pub struct Names<'a> {
    /// Whether the caller may see the item with the prefixed name `{upstream}__{name}`.
    pub admits: Admits<'a>,
    /// Whether names are shown prefixed (`/mcp`, and virtual servers unless `prefix = false`).
    pub prefixed: bool,
}

fn prefixed(upstream: &str, name: &str) -> String {
    format!("{upstream}{TOOL_SEPARATOR}{name}")
}

fn split(name: &str) -> Option<(&str, &str)> {
    name.split_once(TOOL_SEPARATOR)
}

fn upstream_error(e: UpstreamError) -> ErrorData {
    match e {
        UpstreamError::Unknown(_) => ErrorData::invalid_params(e.to_string(), None),
        _ => ErrorData::internal_error(e.to_string(), None),
    }
}

/// The items the agent may see, each named `{upstream}__{name}` through `name` when names are
/// prefixed.
fn visible<T>(items: Vec<(String, T)>, names: Names<'_>, name: fn(&mut T) -> &mut String) -> Vec<T> {
    items
        .into_iter()
        .filter_map(|(upstream, mut item)| {
            let full = prefixed(&upstream, name(&mut item));
            (names.admits)(&full).then(|| {
                if names.prefixed {
                    *name(&mut item) = full;
                }
                item
            })
        })
        .collect()
}

/// Prompts the agent may see, named `{upstream}__{prompt}` (or as their upstream names them),
/// sorted by name. Unprefixed, a name that two upstreams' prompts have is left out: `prompts/get`
/// could not tell which one is meant.
pub async fn prompts(upstreams: &Upstreams, names: Names<'_>) -> Vec<Prompt> {
    let mut out = visible(upstreams.prompts().await, names, |p| &mut p.name);
    out.sort_by(|a, b| a.name.cmp(&b.name));
    if !names.prefixed {
        let shared: std::collections::BTreeSet<String> =
            out.windows(2).filter(|w| w[0].name == w[1].name).map(|w| w[0].name.clone()).collect();
        out.retain(|p| !shared.contains(&p.name));
    }
    out
}

/// The upstream and its own name of the prompt a caller names, or why there is none.
async fn find_prompt(upstreams: &Upstreams, names: Names<'_>, shown: &str) -> Result<(String, String), ErrorData> {
    let unknown = || {
        let form = if names.prefixed { format!("`{{upstream}}{TOOL_SEPARATOR}{{prompt}}` ") } else { String::new() };
        ErrorData::invalid_params(
            format!("there is no prompt `{shown}`; prompt names are {form}as listed by prompts/list"),
            None,
        )
    };
    if names.prefixed {
        return match split(shown) {
            Some((upstream, name)) if (names.admits)(shown) && upstreams.contains(upstream) => {
                Ok((upstream.to_string(), name.to_string()))
            }
            _ => Err(unknown()),
        };
    }
    let mut found: Vec<String> = upstreams
        .prompts()
        .await
        .into_iter()
        .filter(|(upstream, p)| p.name == shown && (names.admits)(&prefixed(upstream, &p.name)))
        .map(|(upstream, _)| upstream)
        .collect();
    found.dedup();
    match found.as_slice() {
        [upstream] => Ok((upstream.clone(), shown.to_string())),
        [] => Err(unknown()),
        several => Err(ErrorData::invalid_params(
            format!(
                "the prompt `{shown}` is offered by several upstreams ({}) and is withheld: a name must reach one prompt",
                several.iter().map(|u| format!("`{u}`")).collect::<Vec<_>>().join(", ")
            ),
            None,
        )),
    }
}

/// Where `prompts/get` for a name as prompts/list shows it goes: the upstream, and the request
/// with the upstream's own name.
pub async fn prompt_target(
    upstreams: &Upstreams,
    names: Names<'_>,
    mut params: GetPromptRequestParams,
) -> Result<(String, GetPromptRequestParams), ErrorData> {
    let (upstream, name) = find_prompt(upstreams, names, &params.name).await?;
    params.name = name;
    Ok((upstream, params))
}

/// `prompts/get` at the upstream [`prompt_target`] chose.
pub async fn get_prompt(
    upstreams: &Upstreams,
    upstream: &str,
    params: GetPromptRequestParams,
) -> Result<GetPromptResponse, ErrorData> {
    upstreams.get_prompt(upstream, params).await.map_err(upstream_error)
}

/// Resources the agent may see, named `{upstream}__{name}` when prefixed, URIs unchanged.
pub async fn resources(upstreams: &Upstreams, names: Names<'_>) -> Vec<Resource> {
    visible(upstreams.resources().await, names, |r| &mut r.name)
}

/// Resource templates the agent may see, named `{upstream}__{name}` when prefixed, URI templates
/// unchanged.
pub async fn resource_templates(upstreams: &Upstreams, names: Names<'_>) -> Vec<ResourceTemplate> {
    visible(upstreams.resource_templates().await, names, |t| &mut t.name)
}

/// The upstream that serves `uri` for this agent, if any.
/// The upstream that serves `uri` to a caller who may see what `admits` admits.
pub(crate) async fn route(upstreams: &Upstreams, admits: Admits<'_>, uri: &str) -> Option<String> {
    for (upstream, r) in upstreams.resources().await {
        if r.uri == uri && admits(&prefixed(&upstream, &r.name)) {
            return Some(upstream);
        }
    }
    upstreams
        .resource_templates()
        .await
        .into_iter()
        .filter(|(upstream, t)| admits(&prefixed(upstream, &t.name)))
        .filter_map(|(upstream, t)| template_match(&t.uri_template, uri).map(|len| (len, upstream)))
        .max_by_key(|(len, _)| *len)
        .map(|(_, upstream)| upstream)
}

/// The upstream that serves `resources/read` (or a subscription) for `uri`, or why there is none.
pub async fn resource_target(upstreams: &Upstreams, names: Names<'_>, uri: &str) -> Result<String, ErrorData> {
    route(upstreams, names.admits, uri).await.ok_or_else(|| {
        ErrorData::resource_not_found(
            format!("no upstream offers the resource `{uri}` (see resources/list and resources/templates/list)"),
            None,
        )
    })
}

/// `resources/read` at the upstream [`resource_target`] chose.
pub async fn read_resource(
    upstreams: &Upstreams,
    upstream: &str,
    params: ReadResourceRequestParams,
) -> Result<ReadResourceResponse, ErrorData> {
    upstreams.read_resource(upstream, params).await.map_err(upstream_error)
}

/// Where `completion/complete` goes, for a prompt argument (the prompt's name as prompts/list
/// shows it) or a resource template argument (routed by the template URI): the upstream and the
/// request with the upstream's own names; `None` when nothing offers what it refers to.
pub async fn completion_target(
    upstreams: &Upstreams,
    names: Names<'_>,
    mut params: CompleteRequestParams,
) -> Option<(String, CompleteRequestParams)> {
    let upstream = match &mut params.r#ref {
        Reference::Prompt(p) => match find_prompt(upstreams, names, &p.name).await {
            Ok((upstream, name)) => {
                p.name = name;
                Some(upstream)
            }
            Err(_) => None,
        },
        Reference::Resource(r) => upstreams
            .resource_templates()
            .await
            .into_iter()
            .find(|(upstream, t)| t.uri_template == r.uri && (names.admits)(&prefixed(upstream, &t.name)))
            .map(|(upstream, _)| upstream),
        // A kind of reference this version does not know: nothing to route it by.
        _ => None,
    };
    upstream.map(|u| (u, params))
}

/// `completion/complete` at the upstream [`completion_target`] chose.
pub async fn complete(
    upstreams: &Upstreams,
    upstream: &str,
    params: CompleteRequestParams,
) -> Result<CompleteResult, ErrorData> {
    upstreams.complete(upstream, params).await.map_err(upstream_error)
}

/// Whether `uri` is an expansion of the RFC 6570 template `template`; `Some(n)` gives the length
/// of the template's literal text (more literal text is a more specific match).
pub fn template_match(template: &str, uri: &str) -> Option<usize> {
    let mut pattern = String::from("^");
    let mut literal = 0;
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let (text, tail) = rest.split_at(open);
        pattern.push_str(&regex::escape(text));
        literal += text.len();
        let close = tail.find('}')?;
        let expr = &tail[1..close];
        pattern.push_str(match expr.chars().next() {
            // Reserved and fragment expansion may contain slashes.
            Some('+') | Some('#') => "(.*)",
            // Query expansions: `?a,b` / `&a`.
            Some('?') | Some('&') => r"(\?[^#]*|&[^#]*)?",
            Some('/') => "((?:/[^/?#]*)*)",
            _ => "([^/?#]*)",
        });
        rest = &tail[close + 1..];
    }
    pattern.push_str(&regex::escape(rest));
    literal += rest.len();
    pattern.push('$');
    let re = regex::Regex::new(&pattern).ok()?;
    re.is_match(uri).then_some(literal)
}

#[cfg(test)]
mod tests {
    use super::template_match;

    #[test]
    fn templates_match_their_expansions_only() {
        assert!(template_match("demo://resource/dynamic/text/{index}", "demo://resource/dynamic/text/7").is_some());
        assert!(template_match("demo://resource/dynamic/text/{index}", "demo://resource/dynamic/blob/7").is_none());
        assert!(template_match("demo://resource/dynamic/text/{index}", "demo://resource/dynamic/text/7/8").is_none());
        assert!(template_match("file:///{+path}", "file:///etc/hosts").is_some());
        assert!(template_match("repo://{owner}/{name}{?ref}", "repo://a/b?ref=main").is_some());
        // A template with more literal text is the more specific match.
        let general = template_match("demo://{+rest}", "demo://resource/x").unwrap_or(0);
        let specific = template_match("demo://resource/{id}", "demo://resource/x").unwrap_or(0);
        assert!(specific > general);
        // Regex metacharacters in the literal part are literal.
        assert!(template_match("a.b://{x}", "aXb://1").is_none());
    }
}
